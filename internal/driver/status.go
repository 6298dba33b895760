package driver

import (
	"time"

	"github.com/cargo-migrate/cargo/internal/copier"
	"github.com/cargo-migrate/cargo/internal/state"
)

// status is what `docker volume inspect` shows under Status. The names
// are an interface: the migrate CLI and users' scripts read them.
func (d *Driver) status(v *state.Volume) map[string]any {
	if v.Kind == state.KindExport {
		return d.exportStatus(v)
	}
	st := map[string]any{"state": "local"}
	if fr := v.Federation; fr != nil {
		d.federationStatus(v, fr, st)
	}
	if ctrl := d.exportOf(v.Name); ctrl != "" {
		st["state"] = "exporting"
		st["export"] = ctrl
		st["to"] = d.vols[ctrl].Export.To
	}
	return st
}

// rfc3339 formats times in RFC 3339 with milliseconds, enough to time a
// copy from its own timestamps.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func (d *Driver) federationStatus(v *state.Volume, fr *state.FederationRecord, st map[string]any) {
	st["source"] = fr.Source
	if c := v.Options["context"]; c != "" {
		st["source_context"] = c
	}
	if fr.Settled {
		// Every file is local and the source is no longer needed.
		st["settled"] = true
	}
	st["started_at"] = rfc3339(fr.StartedAt)
	st["completed_at"] = rfc3339(fr.CompletedAt)
	st["files_total"] = fr.FilesTotal
	st["bytes_total"] = fr.BytesTotal
	if f := d.feds[v.Name]; f != nil && fr.CompletedAt.IsZero() {
		cs := f.cop.Status()
		st["state"] = string(cs.State)
		st["files_copied"] = cs.FilesCopied
		st["bytes_copied"] = cs.BytesCopied
		st["rate"] = int64(cs.Rate)
		st["updated_at"] = rfc3339(cs.Updated)
		if cs.Error != "" {
			st["error"] = cs.Error
		}
		return
	}
	if !fr.CompletedAt.IsZero() {
		st["state"] = string(copier.StateComplete)
		st["files_copied"] = fr.FilesTotal
		st["bytes_copied"] = fr.BytesTotal
		st["rate"] = 0
		st["updated_at"] = rfc3339(fr.CompletedAt)
		return
	}
	st["state"] = string(copier.StateFailed)
	st["error"] = "the copy is not running; see the plugin's log"
}

func (d *Driver) exportStatus(v *state.Volume) map[string]any {
	e := v.Export
	st := map[string]any{
		"state":        "exporting",
		"volume":       e.Volume,
		"to":           e.To,
		"export_id":    e.ID,
		"ticket":       e.Ticket,
		"completed_at": rfc3339(e.CompletedAt),
	}
	if !e.Open() {
		st["state"] = string(copier.StateComplete)
		st["report"] = e.Report
	}
	if oe := d.exports[v.Name]; oe != nil {
		files, bytes := oe.exp.Totals()
		st["files_total"], st["bytes_total"] = files, bytes
	}
	return st
}
