package driver

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/state"
)

// createCheckpointExport opens an export of a container's checkpoint
// under the volume name ctrl: the checkpoint's tree is walked now and
// served, file by file, to whoever presents the export's credential. A
// checkpoint is written once by the engine and read only, so nothing is
// frozen. Called with ctrl's lock held.
func (d *Driver) createCheckpointExport(ctrl string, opts map[string]string) error {
	ref, err := parseCheckpointRef(opts[optCheckpoint])
	if err != nil {
		return fmt.Errorf("volume %q: option %s: %w", ctrl, optCheckpoint, err)
	}
	if d.cfg.Exports == nil {
		return errors.New("exports are disabled in this plugin")
	}
	fail := func(err error) error {
		return fmt.Errorf("cannot export checkpoint %q of container %s: %w", ref.Name, ref.Container, err)
	}
	id, token, ticket, err := d.newExportCredential()
	if err != nil {
		return fail(err)
	}
	rec := &state.Volume{
		Name: ctrl, Kind: kindCheckpointExport, CreatedAt: time.Now().UTC().Truncate(time.Second), Options: maps.Clone(opts),
		Export: &state.ExportRecord{ID: id, Token: token, To: opts["to"], Ticket: ticket},
	}
	exp, err := d.serveCheckpointExport(rec)
	if err != nil {
		return fail(err)
	}
	// The record is the commit point: an export whose record is not on
	// disk is not acknowledged.
	err = os.MkdirAll(d.store.Dir(ctrl), 0o700)
	if err == nil {
		err = d.store.Save(rec)
	}
	if err != nil {
		d.cfg.Exports.Remove(id)
		os.RemoveAll(d.store.Dir(ctrl))
		return err
	}
	d.mu.Lock()
	d.vols[ctrl] = rec
	d.exports[ctrl] = &openExport{ctrl: ctrl, exp: exp}
	d.mu.Unlock()
	files, bytes := exp.Totals()
	d.log.Info("opened checkpoint export", "export", ctrl, "container", ref.Container, "checkpoint", ref.Name,
		"to", rec.Export.To, "files", files, "bytes", bytes)
	return nil
}

// serveCheckpointExport walks the checkpoint rec names and serves it
// under rec's export ID and credential: at its create, and again after a
// restart of the plugin while the target has not reported it holds it.
func (d *Driver) serveCheckpointExport(rec *state.Volume) (*export.Export, error) {
	ref, err := parseCheckpointRef(rec.Options[optCheckpoint])
	if err != nil {
		return nil, err
	}
	dir, err := d.openCheckpoint(ref)
	if err != nil {
		return nil, err
	}
	exp, err := export.Open(d.ctx, rec.Export.ID, rec.Export.Token, fdPath(dir), func(report string) error {
		return d.checkpointExportCompleted(rec.Name, report)
	})
	dir.Close() // the export holds its own descriptor of it
	if err != nil {
		return nil, err
	}
	d.cfg.Exports.Add(exp)
	return exp, nil
}

// newExportCredential makes an export's ID, credential and ticket.
func (d *Driver) newExportCredential() (id, token, ticket string, err error) {
	if id, err = randomID(); err != nil {
		return "", "", "", err
	}
	if token, _, err = peer.NewToken(); err != nil {
		return "", "", "", err
	}
	t := peer.Ticket{Addr: d.cfg.Advertise, ExportID: id, Token: token, Fingerprint: d.cfg.Fingerprint}
	if err := t.Validate(); err != nil {
		return "", "", "", fmt.Errorf("this host's address for other hosts is unusable (%w); set it with `docker plugin set cargo ADVERTISE_ADDR=<ip>`", err)
	}
	return id, token, t.String(), nil
}

// checkpointExportCompleted runs when the target reports that it holds
// the checkpoint: the completion is recorded, then the export closes and
// its credential dies. The target reports only once the checkpoint is in
// place, so nothing is lost if this fails: its copy is there either way.
func (d *Driver) checkpointExportCompleted(ctrl, report string) error {
	v, unlock := d.lockVolume(ctrl)
	defer unlock()
	if v == nil || v.Kind != kindCheckpointExport {
		return errors.New("export closed")
	}
	if v.Export.Open() {
		if _, err := d.recordExportCompleted(v, report); err != nil {
			return err
		}
		d.log.Info("the target has the checkpoint; export closed", "export", ctrl, "checkpoint", v.Options[optCheckpoint], "report", report)
	}
	d.closeCheckpointExport(ctrl)
	return nil
}

// closeCheckpointExport stops serving the checkpoint export held by ctrl,
// if it is served; the checkpoint itself stays as it is. Called with
// ctrl's lock held.
func (d *Driver) closeCheckpointExport(ctrl string) {
	if oe := d.openExportOf(ctrl); oe != nil {
		d.setOpenExport(ctrl, nil)
		d.cfg.Exports.Remove(oe.exp.ID)
	}
}

// closeCheckpointVolume is what removing a checkpoint volume does before
// its record goes: an export stops being served; a fetched checkpoint
// stays where it was placed, for the engine to restore from and delete.
func (d *Driver) closeCheckpointVolume(v *state.Volume) {
	if v.Kind == kindCheckpointExport {
		d.closeCheckpointExport(v.Name)
	}
}
