package driver

import (
	"github.com/cargo-migrate/cargo/internal/copier"
	"github.com/cargo-migrate/cargo/internal/state"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// statusLocked is what `docker volume inspect` shows under Status. Called
// with d.mu held.
//
// A volume still recovering after a restart keeps the state its record
// gives, with the error errRecovering (its copy's counters are known again
// once its replica is read); a failed one shows state failed with why and
// what to do.
func (d *Driver) statusLocked(v *state.Volume) volstatus.Status {
	st := d.recordStatusLocked(v)
	switch {
	case d.recovering[v.Name] != nil:
		if v.Kind == state.KindFederated && d.feds[v.Name] == nil && v.Federation.CompletedAt.IsZero() {
			st.State = volstatus.StateCopying
		}
		st.Error = errRecovering
	case d.failed[v.Name] != nil:
		st.State = volstatus.StateFailed
		st.Error = d.failed[v.Name].message(v.Name)
	case d.staleMounts[v.Name] && st.Error == "":
		st.Error = errPreviousMount(v.Name).Error()
	}
	return st
}

func (d *Driver) recordStatusLocked(v *state.Volume) volstatus.Status {
	if v.Kind == state.KindExport {
		return d.exportStatusLocked(v)
	}
	st := volstatus.Status{State: volstatus.StateLocal}
	if fr := v.Federation; fr != nil {
		d.federationStatusLocked(v, fr, &st)
	}
	if ctrl := d.frozenByLocked(v.Name); ctrl != nil {
		st.State = volstatus.StateExporting
		st.Export = ctrl.Name
		st.To = ctrl.Export.To
	}
	return st
}

func (d *Driver) federationStatusLocked(v *state.Volume, fr *state.FederationRecord, st *volstatus.Status) {
	st.Source = fr.Source
	st.SourceContext = v.Options["context"]
	// Settled: every file is local and the source is no longer needed.
	st.Settled = fr.Settled
	st.StartedAt = volstatus.Time(fr.StartedAt)
	st.CompletedAt = volstatus.Time(fr.CompletedAt)
	st.FilesTotal = int64(fr.FilesTotal)
	st.BytesTotal = fr.BytesTotal
	if f := d.feds[v.Name]; f != nil && fr.CompletedAt.IsZero() {
		cs := f.cop.Status()
		st.State = copyState(cs.State)
		st.FilesCopied = int64(cs.FilesCopied)
		st.BytesCopied = cs.BytesCopied
		st.Rate = int64(cs.Rate)
		st.UpdatedAt = volstatus.Time(cs.Updated)
		st.Error = cs.Error
		return
	}
	if !fr.CompletedAt.IsZero() {
		st.State = volstatus.StateComplete
		st.FilesCopied = int64(fr.FilesTotal)
		st.BytesCopied = fr.BytesTotal
		st.Rate = 0
		st.UpdatedAt = volstatus.Time(fr.CompletedAt)
		return
	}
	st.State = volstatus.StateFailed
	st.Error = "the copy is not running; see the plugin's log"
}

// copyState is the one place a copy's state becomes a volume's.
func copyState(s copier.State) volstatus.State {
	switch s {
	case copier.StateStalled:
		return volstatus.StateStalled
	case copier.StateComplete:
		return volstatus.StateComplete
	case copier.StateFailed:
		return volstatus.StateFailed
	default:
		// copier.StateCopying, and any state the copier may add: the
		// copy runs, neither done nor given up.
		return volstatus.StateCopying
	}
}

func (d *Driver) exportStatusLocked(v *state.Volume) volstatus.Status {
	e := v.Export
	st := volstatus.Status{
		State:       volstatus.StateExporting,
		Volume:      e.Volume,
		To:          e.To,
		ExportID:    e.ID,
		Ticket:      e.Ticket,
		CompletedAt: volstatus.Time(e.CompletedAt),
	}
	if !e.Open() {
		st.State = volstatus.StateComplete
		st.Report = e.Report
	}
	if oe := d.exports[v.Name]; oe != nil {
		files, bytes := oe.exp.Totals()
		st.FilesTotal, st.BytesTotal = int64(files), bytes
	}
	return st
}
