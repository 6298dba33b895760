package driver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/replica"
	"github.com/cargo-migrate/cargo/internal/state"
)

// Settling turns a federated volume whose copy is complete into a plain
// local volume: what containers wrote (the overlay's upper layer) is merged
// into the replica, then everything of the federation is removed. It is a
// state machine whose steps are recorded in the volume's record
// (state.SettleStep) before each starts, and each of which can be redone,
// a done step being a no-op:
//
//	(none)   the upper root's attributes are read and recorded with the
//	         step merge: merging changes them
//	merge    upper is merged into data/ (replica.Settle, itself
//	         redoable), data/ is given the recorded attributes; then cleanup
//	         is recorded
//	cleanup  upper/, work/, partial/ and the manifest are removed; then the
//	         volume is recorded local and settled
//
// A settle interrupted anywhere, by an error or by a crash, is finished by
// running settle again: on the volume's next mount or unmount, or in the
// background after the plugin's next start. A failpoint
// driver.settle.<point> sits at every step boundary.

// canSettle tells whether name can be settled now: a federated volume whose
// copy is complete, or whose settling began, that nothing uses: no mount
// reference, no export, no overlay on its upper layer anywhere. Called with
// the volume's lock held.
func (d *Driver) canSettle(name string) (bool, error) {
	v := d.volume(name)
	if v == nil || v.Kind != state.KindFederated || len(v.Mounts) > 0 || d.frozenBy(name) != nil {
		return false, nil
	}
	if fr := v.Federation; fr.CompletedAt.IsZero() && fr.Step() == "" {
		return false, nil
	}
	if n, err := d.mnt.Mounts(d.mountpoint(name)); err != nil || n > 0 {
		return false, err
	}
	// An overlay still on the upper layer (one a container of a previous
	// plugin process holds) would see its files move away under it.
	ovs, err := d.mnt.Overlays(d.store.UpperDir(name))
	if err != nil || len(ovs) > 0 {
		return false, err
	}
	return true, nil
}

// settleIfReady settles name if it can be settled now; a failure fails the
// volume (its Status says so) until a later settle succeeds. Called with
// the volume's lock held: merging walks the whole upper layer.
func (d *Driver) settleIfReady(name string) error {
	ok, err := d.canSettle(name)
	if err != nil || !ok {
		return err
	}
	if err := d.settle(name); err != nil {
		d.fail(name, failSettle, err)
		return fmt.Errorf("volume %q: %w", name, err)
	}
	return nil
}

// settle runs the steps of settling from the one recorded. Called with the
// volume's lock held, when canSettle.
func (d *Driver) settle(name string) error {
	if f := d.fed(name); f != nil {
		d.setFed(name, nil)
		f.stop()
	}
	for {
		v := d.volume(name)
		if v == nil || v.Kind != state.KindFederated {
			d.unfail(name)
			return nil
		}
		var err error
		switch step := v.Federation.Step(); step {
		case "":
			err = d.settleBegin(v)
		case state.SettleMerge:
			err = d.settleMerge(v)
		case state.SettleCleanup:
			err = d.settleCleanup(v)
		default:
			return fmt.Errorf("settling: unknown step %q in the volume's record (written by a newer plugin?)", step)
		}
		if err != nil {
			return fmt.Errorf("settling: %w", err)
		}
	}
}

// settleBegin records the upper root's attributes and the step merge.
func (d *Driver) settleBegin(v *state.Volume) error {
	if err := failpoint.Inject("driver.settle.start"); err != nil {
		return err
	}
	nv := v.Clone()
	root, err := dirMeta(d.store.UpperDir(v.Name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// No upper layer: nothing was written, and the replica's root is right.
	nv.Federation.SettleRoot = root
	nv.Federation.Settling = true
	nv.Federation.SettleStep = state.SettleMerge
	return d.saveVolume(nv)
}

// settleMerge merges the upper layer into the replica and records the
// step cleanup. replica.Settle redoes or skips each of its renames and
// removals, so a merge cut short is finished by running it again.
func (d *Driver) settleMerge(v *state.Volume) error {
	if err := failpoint.Inject("driver.settle.before-merge"); err != nil {
		return err
	}
	name, data, upper := v.Name, d.store.DataDir(v.Name), d.store.UpperDir(v.Name)
	switch _, err := os.Lstat(upper); {
	case err == nil:
		if err := replica.Settle(data, upper, d.store.WorkDir(name)); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrNotExist):
		// Merged and removed by a plugin of before settle steps, which
		// recorded only Settling.
	default:
		return err
	}
	// replica.Settle gave data/ the upper root's attributes as it found
	// them, which a merge that was redone finds changed.
	if root := v.Federation.SettleRoot; root != nil {
		if err := setDirMeta(data, root); err != nil {
			return fmt.Errorf("giving the volume's top directory its attributes: %w", err)
		}
	}
	if err := failpoint.Inject("driver.settle.after-merge"); err != nil {
		return err
	}
	nv := v.Clone()
	nv.Federation.SettleStep = state.SettleCleanup
	return d.saveVolume(nv)
}

// settleCleanup removes what only the federation used and records the
// volume local and settled.
func (d *Driver) settleCleanup(v *state.Volume) error {
	if err := failpoint.Inject("driver.settle.before-cleanup"); err != nil {
		return err
	}
	name := v.Name
	for _, p := range []string{d.store.UpperDir(name), d.store.WorkDir(name), filepath.Join(d.store.Dir(name), "partial"), d.store.ManifestPath(name)} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	if err := failpoint.Inject("driver.settle.before-record"); err != nil {
		return err
	}
	nv := v.Clone()
	nv.Kind = state.KindLocal
	nv.Federation.Settling = false
	nv.Federation.SettleStep = ""
	nv.Federation.SettleRoot = nil
	nv.Federation.Settled = true
	if err := d.saveVolume(nv); err != nil {
		return err
	}
	d.log.Info("the copy is complete and the volume is local now", "volume", name)
	return failpoint.Inject("driver.settle.after-record")
}

// saveVolume saves v and makes it the volume's record.
func (d *Driver) saveVolume(v *state.Volume) error {
	if err := d.store.Save(v); err != nil {
		return err
	}
	d.setVolume(v)
	return nil
}

// dirMeta reads a directory's owner, permissions and times.
func dirMeta(p string) (*state.DirMeta, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	return &state.DirMeta{UID: st.Uid, GID: st.Gid, Mode: st.Mode & 0o7777,
		Atime: st.Atim.Nano(), Mtime: st.Mtim.Nano()}, nil
}

// setDirMeta gives directory p the attributes m; chown first, as it clears
// set-id bits.
func setDirMeta(p string, m *state.DirMeta) error {
	if err := os.Lchown(p, int(m.UID), int(m.GID)); err != nil {
		return err
	}
	if err := unix.Chmod(p, m.Mode); err != nil {
		return &fs.PathError{Op: "chmod", Path: p, Err: err}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(m.Atime), unix.NsecToTimespec(m.Mtime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "utimes", Path: p, Err: err}
	}
	return nil
}
