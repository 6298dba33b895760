package driver

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/state"
)

// recoveryWorkers is how many volumes recover at once after a start: enough
// to overlap their I/O, few enough that reading one large replica does not
// starve the others of the disk.
const recoveryWorkers = 4

// errRecovering is the Status error of a volume not yet recovered.
const errRecovering = "recovering after a restart"

// startRecovery brings every volume back in the background after a start,
// each under its own lock. Until a volume is recovered, Get and List show
// it (its Status says it is recovering), and operations on it wait for it
// (waitRecovered); no other volume waits.
//
// Cargo volumes go first, recoveryWorkers at a time; each export volume
// waits for the volume it exports, then serves its export again.
func (d *Driver) startRecovery(leftovers []string) {
	names := d.names()
	d.mu.Lock()
	for _, n := range names {
		d.recovering[n] = make(chan struct{})
	}
	d.mu.Unlock()

	var vols, ctrls []string
	for _, n := range names {
		if k := d.volume(n).Kind; k == state.KindExport || k == kindCheckpointExport {
			ctrls = append(ctrls, n)
		} else {
			vols = append(vols, n)
		}
	}
	var served sync.WaitGroup
	for _, ctrl := range ctrls {
		served.Add(1)
		d.recovery.Add(1)
		go func() {
			defer d.recovery.Done()
			defer served.Done()
			d.recoverExport(ctrl)
		}()
	}
	d.recovery.Add(1)
	go func() {
		defer d.recovery.Done()
		served.Wait()
		close(d.exportsServed)
	}()
	d.recovery.Add(1)
	go func() {
		defer d.recovery.Done()
		var g errgroup.Group
		g.SetLimit(recoveryWorkers)
		for _, n := range vols {
			g.Go(func() error {
				d.recoverOne(n)
				return nil
			})
		}
		_ = g.Wait() // the workers report to the volumes, never here
		d.sweep(leftovers)
		d.removeStaleMountpoints()
		served.Wait()
		close(d.recovered)
		d.log.Info("every volume is recovered", "volumes", len(names))
	}()
}

// waitRecovered waits until each of names is recovered after the start.
// Called with no lock held: recovery takes the volume's lock.
func (d *Driver) waitRecovered(names ...string) {
	for _, n := range names {
		d.mu.Lock()
		ch := d.recovering[n]
		d.mu.Unlock()
		if ch != nil {
			<-ch
		}
	}
}

func (d *Driver) markRecovered(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch := d.recovering[name]; ch != nil {
		close(ch)
		delete(d.recovering, name)
	}
}

// recoverOne recovers one cargo volume; a failure fails that volume only.
func (d *Driver) recoverOne(name string) {
	defer d.markRecovered(name)
	if d.ctx.Err() != nil {
		return // closing: the next start recovers it
	}
	unlock := d.locks.lock(name)
	defer unlock()
	if err := failpoint.Inject("driver.recover.before-volume"); err != nil {
		d.fail(name, failCopy, err)
		return
	}
	if step, err := d.recoverVolume(name); err != nil {
		d.fail(name, step, err)
	}
}

// recoverVolume brings a volume in line with its record: a mount nobody
// holds is released, an interrupted or pending settle is finished, an
// unfinished copy resumes, and a volume that holds mount references is
// mounted. It can be run again after a failure (Mount does). Called with
// the volume's lock held.
func (d *Driver) recoverVolume(name string) (failStep, error) {
	v := d.volume(name)
	if v == nil {
		return 0, nil
	}
	if v.Kind == kindCheckpoint {
		if v.Federation.CompletedAt.IsZero() && d.fetchOf(name) == nil {
			d.startCheckpointFetch(v, nil, nil) // it starts over: nothing of it is in place yet
		}
		return 0, nil
	}
	n, err := d.mnt.Mounts(d.mountpoint(name))
	if err != nil {
		return failMount, fmt.Errorf("checking the mount of volume %q: %w", name, err)
	}
	held := len(v.Mounts) > 0
	if n > 0 && !held {
		if err := d.detach(name); err != nil {
			return failMount, err
		}
		n = 0
		d.log.Info("released a mount nobody holds", "volume", name)
	}
	if v.Kind == state.KindFederated {
		if n > 0 {
			if d.viewKept(name) {
				// Its overlay reads a view the keeper kept: serve
				// it again, which needs the copy running.
				if step, err := d.resumeFederated(name); err != nil {
					return step, err
				}
				d.resumeView(name)
			}
			if err := d.checkPreviousMount(name); err != nil {
				return failMount, err
			}
		}
		if step, err := d.resumeFederated(name); err != nil {
			return step, err
		}
	}
	if held && n == 0 {
		// The engine unmounts everything under the plugin's directory
		// when it disables the plugin or shuts down; the containers
		// holding these references keep their own bind, or come back
		// with the engine.
		if err := d.attach(name); err != nil {
			return failMount, fmt.Errorf("re-establishing the mount: %w", err)
		}
		d.log.Info("re-established mount", "volume", name, "mounts", len(v.Mounts))
	}
	return 0, nil
}

// resumeFederated finishes an interrupted settle, settles a complete copy
// nothing uses, or resumes an unfinished copy. Called with the volume's
// lock held.
func (d *Driver) resumeFederated(name string) (failStep, error) {
	fr := d.volume(name).Federation
	if fr.Step() != "" || !fr.CompletedAt.IsZero() {
		ok, err := d.canSettle(name)
		if err != nil || !ok {
			return failSettle, err // it settles once unused
		}
		if err := failpoint.Inject("driver.settle.resume"); err != nil {
			return failSettle, err
		}
		d.log.Info("settling the volume after a restart", "volume", name, "step", fr.Step())
		return failSettle, d.settle(name)
	}
	if d.fed(name) != nil {
		return 0, nil
	}
	if err := d.resumeFederation(name, d.volume(name)); err != nil {
		return failCopy, fmt.Errorf("resuming the copy: %w", err)
	}
	return 0, nil
}

// recoverExport serves an open export again once the volume it exports is
// recovered. Its tree is frozen, so walking it again gives the same
// manifest and indexes.
func (d *Driver) recoverExport(ctrl string) {
	defer d.markRecovered(ctrl)
	if v := exportedVolume(d.volume(ctrl)); v != "" {
		d.waitRecovered(v)
	}
	if d.ctx.Err() != nil {
		return
	}
	v, unlock := d.lockVolumeNow(ctrl) // lockVolume would wait for this very recovery
	defer unlock()
	if v != nil && v.Kind == kindCheckpointExport {
		d.recoverCheckpointExport(v)
		return
	}
	if v == nil || v.Kind != state.KindExport {
		return
	}
	if n, err := d.mnt.Mounts(d.mountpoint(ctrl)); err == nil && n > 0 {
		if err := d.detach(ctrl); err != nil {
			d.log.Error("releasing a mount of an export volume", "export", ctrl, "error", err)
		}
	}
	if !v.Export.Open() || d.cfg.Exports == nil {
		return
	}
	oe, err := d.serveExport(v)
	if err != nil {
		d.fail(ctrl, failExport, fmt.Errorf("serving the export again: %w", err))
		return
	}
	d.setOpenExport(ctrl, oe)
	d.log.Info("serving export again", "export", ctrl, "volume", v.Export.Volume)
}

// recoverCheckpointExport serves a checkpoint export again while the
// target has not reported it holds the checkpoint: a live move whose
// source plugin restarted during its transfer goes on. Called with the
// export's lock held.
func (d *Driver) recoverCheckpointExport(v *state.Volume) {
	if !v.Export.Open() || d.cfg.Exports == nil {
		return
	}
	exp, err := d.serveCheckpointExport(v)
	if err != nil {
		d.fail(v.Name, failExport, fmt.Errorf("serving the checkpoint again: %w", err))
		return
	}
	d.setOpenExport(v.Name, &openExport{ctrl: v.Name, exp: exp})
	d.log.Info("serving checkpoint export again", "export", v.Name, "checkpoint", v.Options[optCheckpoint])
}

// sweep removes the remains of interrupted creates and removes.
func (d *Driver) sweep(leftovers []string) {
	for _, n := range leftovers {
		unlock := d.locks.lock(n)
		if d.volume(n) == nil {
			if err := d.store.Sweep(n); err != nil {
				d.log.Error("sweeping the leftovers of an interrupted create or remove", "volume", n, "error", err)
			} else {
				d.log.Info("swept leftovers of an interrupted create or remove", "volume", n)
			}
		}
		unlock()
	}
}

// removeStaleMountpoints unmounts and removes the mountpoints of volumes
// that no longer exist.
func (d *Driver) removeStaleMountpoints() {
	entries, err := os.ReadDir(d.mountDir)
	if err != nil {
		d.log.Error("reading the mount directory", "error", err)
		return
	}
	for _, e := range entries {
		n := e.Name()
		unlock := d.locks.lock(n)
		if d.volume(n) == nil {
			if err := d.detach(n); err != nil {
				d.log.Error("removing a stale mountpoint", "name", n, "error", err)
			} else {
				d.log.Info("removed stale mountpoint", "name", n)
			}
		}
		unlock()
	}
}

// failStep is what failed of a volume, for the advice its Status gives.
type failStep int

const (
	failCopy   failStep = iota // the copy could not resume
	failSave                   // a rebuilt record could not be saved
	failSettle                 // settling failed part-way
	failMount                  // the mount could not be checked or re-established
	failExport                 // an open export could not be served again
)

// failure is why a volume failed and what its user can do. A failed
// volume is quarantined: its Status shows state failed with both; it stays
// listed, can be removed, and its next mount retries what failed.
type failure struct {
	step failStep
	err  error
}

func (f *failure) advice(name string) string {
	switch f.step {
	case failSave:
		return "the plugin's state directory may be full or read-only: fix it, then mount the volume or restart the plugin (docker plugin disable cargo; docker plugin enable cargo)"
	case failSettle:
		return "every file of it is on this host; fix the cause (see the plugin's log), then mount the volume or restart the plugin to finish settling it"
	case failMount:
		return fmt.Sprintf("fix the cause (see the plugin's log), then restart the containers using it (docker ps --filter volume=%s)", name)
	case failExport:
		return "remove the export volume to unfreeze the volume, then export it again"
	default:
		return "fix the cause (see the plugin's log), then mount the volume or restart the plugin to retry; or remove the volume and move it again"
	}
}

// message is the failure as the volume's Status and a refused Mount say it.
func (f *failure) message(name string) string {
	return fmt.Sprintf("%v; %s", f.err, f.advice(name))
}

// fail quarantines name with err.
func (d *Driver) fail(name string, step failStep, err error) {
	d.mu.Lock()
	d.failed[name] = &failure{step: step, err: err}
	d.mu.Unlock()
	d.log.Error("volume failed; the other volumes are not affected", "volume", name, "error", err)
}

func (d *Driver) unfail(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.failed, name)
}

func (d *Driver) failureOf(name string) *failure {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed[name]
}

// retry runs a failed volume's recovery again. Called with the volume's
// lock held.
func (d *Driver) retry(name string) error {
	f := d.failureOf(name)
	if f == nil {
		return nil
	}
	if f.step == failSave {
		if err := d.store.Save(d.volume(name)); err != nil {
			d.fail(name, failSave, err)
			return errors.New(d.failureOf(name).message(name))
		}
	}
	if step, err := d.recoverVolume(name); err != nil {
		d.fail(name, step, err)
		return fmt.Errorf("volume %q: %s", name, d.failureOf(name).message(name))
	}
	d.unfail(name)
	d.log.Info("volume recovered", "volume", name)
	return nil
}
