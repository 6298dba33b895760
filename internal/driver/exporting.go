package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/names"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/state"
)

// openExport is an export being served.
type openExport struct {
	ctrl   string
	volume string
	// engine: volume is the engine's local-driver volume, not ours.
	engine bool
	exp    *export.Export
	// view is where a federated volume's merged view is mounted for the
	// export to read; "" for a local volume.
	view string
}

// frozenBy returns the record of the open export volume that holds name
// frozen, or nil.
func (d *Driver) frozenBy(name string) *state.Volume {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.frozenByLocked(name)
}

// frozenByLocked is frozenBy, called with d.mu held.
func (d *Driver) frozenByLocked(name string) *state.Volume {
	for _, v := range d.vols {
		if exportedVolume(v) == name && v.Export.Open() {
			return v
		}
	}
	return nil
}

func frozenError(name string, ctrl *state.Volume, what string) error {
	to := ctrl.Export.To
	if to == "" {
		to = "another host"
	}
	return fmt.Errorf("volume %q cannot be %s: it is frozen while it is exported to %s (export volume %q); finish the migration, or remove volume %q to abort the export",
		name, what, to, ctrl.Name, ctrl.Name)
}

// createExport opens an export of opts["export"] under the name ctrl.
// Called with the locks of ctrl and of the exported volume held.
func (d *Driver) createExport(ctrl string, opts map[string]string) error {
	name, to := opts["export"], opts["to"]
	if d.cfg.Exports == nil {
		return errors.New("exports are disabled in this plugin")
	}
	engine := opts["driver"] == "local"
	if engine {
		if err := d.checkEngineVolume(name); err != nil {
			return err
		}
		return d.openExport(ctrl, name, to, true, opts)
	}
	v := d.volume(name)
	if v == nil {
		return fmt.Errorf("cannot export volume %q: no such cargo volume", name)
	}
	if v.Kind == state.KindExport {
		return fmt.Errorf("cannot export %q: it is itself an export volume", name)
	}
	if n := len(v.Mounts); n > 0 {
		return fmt.Errorf("cannot export volume %q: it is mounted by %d container(s); stop them first (an export freezes the volume)", name, n)
	}
	if other := d.frozenBy(name); other != nil {
		return fmt.Errorf("volume %q is already being exported (export volume %q)", name, other.Name)
	}
	if err := d.settleIfReady(name); err != nil {
		return err
	}
	return d.openExport(ctrl, name, to, false, opts)
}

// checkEngineVolume tells whether a local-driver volume can be read.
func (d *Driver) checkEngineVolume(name string) error {
	if err := names.ValidateVolume(name); err != nil {
		return err
	}
	if d.cfg.EngineVolumes == "" {
		return fmt.Errorf("cannot export local volume %q: this plugin has no view of the engine's volumes", name)
	}
	fi, err := os.Stat(filepath.Join(d.cfg.EngineVolumes, name, "_data"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, derr := os.Stat(d.cfg.EngineVolumes); derr != nil {
			return fmt.Errorf("cannot export local volume %q: the engine's volumes directory is not mounted in the plugin (%w); if the engine's data root is not /var/lib/docker, run `docker plugin set cargo engine-volumes.source=DATA-ROOT/volumes`", name, derr)
		}
		return fmt.Errorf("cannot export local volume %q: no such volume in the engine's volumes directory (a local volume with mount options, such as NFS, cannot be exported)", name)
	case err != nil:
		return fmt.Errorf("cannot export local volume %q: %w", name, err)
	case !fi.IsDir():
		return fmt.Errorf("cannot export local volume %q: its data is not a directory", name)
	}
	return nil
}

// openExport opens the export of a cargo volume or, when engine is set,
// of a local-driver volume. Called with the locks of both held.
func (d *Driver) openExport(ctrl, name, to string, engine bool, opts map[string]string) error {
	id, err := randomID()
	if err != nil {
		return err
	}
	token, _, err := peer.NewToken()
	if err != nil {
		return err
	}
	ticket := peer.Ticket{Addr: d.cfg.Advertise, ExportID: id, Token: token, Fingerprint: d.cfg.Fingerprint}
	if err := ticket.Validate(); err != nil {
		return fmt.Errorf("cannot export volume %q: this host's address for other hosts is unusable (%w); set it with `docker plugin set cargo ADVERTISE_ADDR=<ip>`", name, err)
	}
	rec := &state.Volume{
		Name: ctrl, Kind: state.KindExport, CreatedAt: time.Now().UTC().Truncate(time.Second), Options: maps.Clone(opts),
		Export: &state.ExportRecord{Volume: name, Engine: engine, ID: id, Token: token, To: to, Ticket: ticket.String()},
	}
	began := time.Now()
	oe, err := d.serveExport(rec)
	if err != nil {
		return fmt.Errorf("cannot export volume %q: %w", name, err)
	}
	// The record is the commit point: an export whose record is not on
	// disk is not acknowledged.
	err = os.MkdirAll(d.store.Dir(ctrl), 0o700)
	if err == nil {
		err = d.store.Save(rec)
	}
	if err != nil {
		oe.close(d)
		return err
	}
	// One step, so the export volume is never seen without its export.
	d.mu.Lock()
	d.vols[ctrl] = rec
	d.exports[ctrl] = oe
	d.mu.Unlock()
	files, bytes := oe.exp.Totals()
	walked, encoded := oe.exp.Took()
	d.log.Info("opened export", "volume", name, "export", ctrl, "to", to, "files", files, "bytes", bytes,
		"walk", walked.Round(time.Millisecond), "encode", encoded.Round(time.Millisecond),
		"took", time.Since(began).Round(time.Millisecond))
	return nil
}

// serveExport reads the frozen volume's tree and makes it reachable
// through the peer service: the walk of the whole tree happens here.
// Called with the locks of the export volume and of the exported volume
// held.
func (d *Driver) serveExport(rec *state.Volume) (*openExport, error) {
	name := rec.Export.Volume
	oe := &openExport{ctrl: rec.Name, volume: name, engine: rec.Export.Engine}
	var v *state.Volume
	dir := d.store.DataDir(name)
	if rec.Export.Engine {
		if err := d.checkEngineVolume(name); err != nil {
			return nil, err
		}
		dir = filepath.Join(d.cfg.EngineVolumes, name, "_data")
	} else if v = d.volume(name); v == nil {
		return nil, fmt.Errorf("volume %q is gone", name)
	}
	if v != nil && v.Kind == state.KindFederated {
		// Not all here yet: serve what the container saw, through the
		// same kind of overlay it used.
		if err := d.checkNoOverlay(name); err != nil {
			return nil, err
		}
		lower, err := d.federatedLower(name)
		if err != nil {
			return nil, err
		}
		oe.view = filepath.Join(d.runDir, "export", name)
		if err := os.MkdirAll(oe.view, 0o700); err != nil {
			return nil, err
		}
		if err := d.mnt.Overlay(lower, d.store.UpperDir(name), d.store.WorkDir(name), oe.view); err != nil {
			return nil, err
		}
		if f := d.fed(name); f != nil {
			f.view = oe.view
		}
		dir = oe.view
	}
	ctrl := rec.Name
	exp, err := export.Open(context.Background(), rec.Export.ID, rec.Export.Token, dir, func(report string) error {
		return d.exportCompleted(ctrl, report)
	})
	if err != nil {
		oe.close(d)
		return nil, err
	}
	oe.exp = exp
	d.cfg.Exports.Add(exp)
	return oe, nil
}

// close stops serving; the credential dies with it.
func (oe *openExport) close(d *Driver) {
	if oe.exp != nil {
		d.cfg.Exports.Remove(oe.exp.ID)
	}
	if oe.view != "" {
		if err := d.mnt.Unmount(oe.view); err != nil {
			d.log.Error("unmounting export view", "error", err)
		}
		os.Remove(oe.view)
		if f := d.fed(oe.volume); f != nil {
			f.view = ""
			if err := f.releaseLower(d); err != nil {
				d.log.Error("releasing federated view", "error", err)
			}
		}
	}
}

// closeExport ends the export held by export volume ctrl, if open.
// Called with the locks of ctrl and of the exported volume held.
func (d *Driver) closeExport(ctrl string) {
	if oe := d.openExportOf(ctrl); oe != nil {
		d.setOpenExport(ctrl, nil)
		oe.close(d)
		if oe.engine {
			return
		}
		if err := d.settleIfReady(oe.volume); err != nil {
			d.log.Error("settling after the export ended", "volume", oe.volume, "error", err)
		}
	}
}

// exportCompleted runs when the target reports the copy complete: the
// export closes and the volume is no longer frozen. Its steps, each a
// failpoint, and what a crash at each leaves:
//
//   - driver.export.before-record: nothing recorded; the next process
//     serves the export again and the target, which retries until the
//     source answers, reports again.
//   - driver.export.before-close: the completion is recorded, so the next
//     process neither serves the export nor freezes the volume; the
//     target's retry finds the export gone, which tells it every byte is
//     there.
//
// The target hears of success only once the export is closed. A repeated
// report closes an export that a failure after the record left open.
func (d *Driver) exportCompleted(ctrl, report string) error {
	v, unlock := d.lockVolume(ctrl)
	defer unlock()
	if v == nil || v.Kind != state.KindExport {
		return errors.New("export closed")
	}
	if !v.Export.Open() {
		d.closeExport(ctrl)
		return nil
	}
	d.log.Info("the target reports the copy complete", "export", ctrl, "volume", v.Export.Volume, "report", report)
	if err := failpoint.Inject("driver.export.before-record"); err != nil {
		return err
	}
	nv, err := d.recordExportCompleted(v, report)
	if err != nil {
		return err
	}
	if err := failpoint.Inject("driver.export.before-close"); err != nil {
		return err
	}
	d.closeExport(ctrl)
	d.log.Info("the target has everything; export closed", "export", ctrl, "volume", nv.Export.Volume, "report", report)
	return nil
}

func randomID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// recordExportCompleted records that the target of export volume v has
// everything, with its report. Called with v's lock held.
func (d *Driver) recordExportCompleted(v *state.Volume, report string) (*state.Volume, error) {
	nv := v.Clone()
	nv.Export.CompletedAt = time.Now().UTC()
	nv.Export.Report = report
	if err := d.store.Save(nv); err != nil {
		return nil, err
	}
	d.setVolume(nv)
	return nv, nil
}
