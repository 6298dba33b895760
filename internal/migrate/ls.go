package migrate

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// Migration states of a container, as `docker migrate ls` shows them.
const (
	MigrationNone     = "-"
	MigrationMovedOut = "moved out"
	MigrationMovedIn  = "moved in"
	// MigrationInterrupted: a move of the container did not finish; To
	// is its target, Progress its last phase done, Next the commands
	// that finish or undo it.
	MigrationInterrupted = "move interrupted"
)

// StateUnreachable is the State of the one row of a context whose engine
// could not be listed.
const StateUnreachable = "unreachable"

// ContainerRow is one container of one docker context, with where its
// cargo volumes stand in a move.
type ContainerRow struct {
	Context   string `json:"context"`
	Current   bool   `json:"current"`
	Container string `json:"container"`
	ID        string `json:"id"`
	Image     string `json:"image"`
	// State is the container's state ("running", "exited", ...), or
	// "unreachable" for a context that could not be listed.
	State  string `json:"state"`
	Status string `json:"status"`
	// Migration is "moved out", "moved in" or "-" (never moved); empty
	// when unknown (an unreachable context).
	Migration string `json:"migration"`
	// To is the context a moved-out container went to.
	To string `json:"to,omitempty"`
	// From is the address a moved-in container's volumes copy from.
	From string `json:"from,omitempty"`
	// Progress of a moved-in container's copy: "61%", "61% stalled",
	// ProgressComplete, ProgressLocal or ProgressFailed; of a moved-out
	// one whose copy is done, ProgressCopied.
	Progress    string `json:"progress,omitempty"`
	BytesCopied int64  `json:"bytes_copied"`
	BytesTotal  int64  `json:"bytes_total"`
	Error       string `json:"error,omitempty"`
	// Next says what to run for an interrupted move.
	Next string `json:"next,omitempty"`
}

// The words of ContainerRow.Progress, besides a percentage.
const (
	// ProgressComplete: every volume's copy is complete.
	ProgressComplete = string(volstatus.StateComplete)
	// ProgressLocal: every file is local, the source no longer needed.
	ProgressLocal = ProgressComplete + ", local"
	// ProgressFailed: a volume's copy failed.
	ProgressFailed = string(volstatus.StateFailed)
	// ProgressCopied: a moved-out container whose target has every file;
	// only its failover is left.
	ProgressCopied = "copied"
)

// namedStatus is the Status of one cargo volume of a container, or of
// the export of one of its volumes (Status.Volume is then set).
type namedStatus struct {
	Volume string
	Status volstatus.Status
}

// setMigration derives a container's migration from its cargo volumes.
// A move-out wins over a move-in: the container that left is the one
// still exporting, whatever it once received.
func (r *ContainerRow) setMigration(vols []namedStatus) {
	var (
		out, outDone, in  []string
		copied, total     int64
		federated         int
		complete, settled int
		failed, stalled   int
		errs              []string
	)
	for _, v := range vols {
		st := v.Status
		switch {
		case st.Volume != "" && st.State == volstatus.StateComplete:
			// An export whose copy is done, not yet released by failover.
			if !slices.Contains(outDone, st.To) {
				outDone = append(outDone, st.To)
			}
			continue
		case st.Volume != "" || st.State == volstatus.StateExporting:
			if !slices.Contains(out, st.To) {
				out = append(out, st.To)
			}
			continue
		}
		if st.Source == "" && !st.Settled {
			continue
		}
		federated++
		if st.Source != "" && !slices.Contains(in, st.Source) {
			in = append(in, st.Source)
		}
		copied += st.BytesCopied
		total += st.BytesTotal
		switch {
		case st.Settled:
			settled++
		case st.State == volstatus.StateComplete:
			complete++
		case st.State == volstatus.StateFailed:
			failed++
		case st.State == volstatus.StateStalled:
			stalled++
		}
		if st.Error != "" {
			errs = append(errs, v.Volume+": "+st.Error)
		}
	}
	switch {
	case len(out) > 0:
		r.Migration, r.To = MigrationMovedOut, strings.Join(out, ", ")
		return
	case len(outDone) > 0 && federated == 0:
		// The target has every file; only its failover is left.
		r.Migration, r.To, r.Progress = MigrationMovedOut, strings.Join(outDone, ", "), ProgressCopied
		return
	case federated == 0:
		r.Migration = MigrationNone
		return
	}
	r.Migration, r.From = MigrationMovedIn, strings.Join(in, ", ")
	r.BytesCopied, r.BytesTotal = copied, total
	r.Error = strings.Join(errs, "; ")
	switch {
	case failed > 0:
		r.Progress = ProgressFailed
	case settled == federated:
		// Every file is local: nothing depends on the source any more.
		r.Progress = ProgressLocal
	case complete+settled == federated:
		r.Progress = ProgressComplete
	default:
		r.Progress = fmt.Sprintf("%d%%", percent(copied, total))
		if stalled > 0 {
			r.Progress += " stalled"
		}
	}
}

// setRecorded shows the container's recorded move: an unfinished one
// wins over what its volumes say; a finished one is a move out even
// once its exports are released.
func (r *ContainerRow) setRecorded(rec *moveRecord) {
	switch {
	case !rec.Done():
		r.Migration, r.To, r.Progress = MigrationInterrupted, rec.Target, "after "+rec.Phase
		r.Next = fmt.Sprintf("finish: %s; undo: %s", rec.FinishCommand(), rec.RollbackCommand())
	case r.Migration == MigrationNone:
		r.Migration, r.To = MigrationMovedOut, rec.Target
	}
}

// percent rounds down, so an unfinished copy never shows 100%.
func percent(copied, total int64) int {
	if total <= 0 {
		return 0
	}
	return int(min(copied*100/total, 99))
}

// listHost lists every container of one engine with its migration.
// An error means the engine could not be listed at all; a volume that
// cannot be inspected only marks its container's row.
func listHost(ctx context.Context, e Engine) ([]ContainerRow, error) {
	if _, err := e.API.Ping(ctx, client.PingOptions{}); err != nil {
		return nil, fmt.Errorf("cannot reach the engine of docker context %q: %w", e.Context, err)
	}
	l, err := e.API.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("listing containers on %s: %w", e.Context, err)
	}
	// Volumes can be shared: inspect each once.
	type inspected struct {
		st  volstatus.Status
		err error
	}
	seen := map[string]inspected{}
	exports := exportsOf(ctx, e.API)
	recs, _ := records(ctx, e.API) // trouble here only hides the records
	rows := make([]ContainerRow, 0, len(l.Items))
	for _, c := range l.Items {
		r := ContainerRow{Context: e.Context, ID: c.ID, Image: c.Image, State: string(c.State), Status: c.Status}
		r.Container = c.ID[:min(12, len(c.ID))]
		if len(c.Names) > 0 {
			r.Container = strings.TrimPrefix(c.Names[0], "/")
		}
		var vols []namedStatus
		var errs []string
		for _, m := range c.Mounts {
			if st, ok := exports[m.Name]; ok && m.Type == mount.TypeVolume {
				// Local-driver volumes say nothing of their export, and a
				// cargo volume stops saying it once its copy is done.
				vols = append(vols, namedStatus{m.Name, st})
				continue
			}
			if m.Type != mount.TypeVolume || !isCargo(m.Driver) {
				continue
			}
			in, ok := seen[m.Name]
			if !ok {
				v, err := e.API.VolumeInspect(ctx, m.Name, client.VolumeInspectOptions{})
				in = inspected{volstatus.Parse(v.Volume.Status), err}
				seen[m.Name] = in
			}
			if in.err != nil {
				errs = append(errs, fmt.Sprintf("inspecting volume %s: %v", m.Name, in.err))
				continue
			}
			vols = append(vols, namedStatus{m.Name, in.st})
		}
		r.setMigration(vols)
		if rec := recs[c.ID]; rec != nil {
			r.setRecorded(rec)
		}
		if r.Error != "" {
			errs = append(errs, r.Error)
		}
		r.Error = strings.Join(errs, "; ")
		rows = append(rows, r)
	}
	return rows, nil
}

// exportsOf maps each volume exported from this engine to its export
// volume's Status. Trouble here only hides the exports.
func exportsOf(ctx context.Context, api client.APIClient) map[string]volstatus.Status {
	out := map[string]volstatus.Status{}
	l, err := api.VolumeList(ctx, client.VolumeListOptions{})
	if err != nil {
		return out
	}
	for _, v := range l.Items {
		if !strings.HasSuffix(v.Name, ExportSuffix) || !isCargo(v.Driver) {
			continue
		}
		insp, err := api.VolumeInspect(ctx, v.Name, client.VolumeInspectOptions{})
		if err != nil {
			continue
		}
		if st := volstatus.Parse(insp.Volume.Status); st.Volume != "" {
			out[st.Volume] = st
		}
	}
	return out
}

// listHosts lists every context at once, each within timeout, so that
// one slow or dead host costs the timeout once rather than once per
// host. A host that cannot be listed is one row of state "unreachable".
// Rows are sorted by context, then container.
func listHosts(ctx context.Context, names []string, current string, open opener, timeout time.Duration) []ContainerRow {
	per := make([][]ContainerRow, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			rows, err := openAndList(ctx, name, open)
			if err != nil {
				rows = []ContainerRow{{Context: name, State: StateUnreachable, Error: err.Error()}}
			}
			for j := range rows {
				rows[j].Current = name == current
			}
			per[i] = rows
		})
	}
	wg.Wait()
	rows := []ContainerRow{}
	for _, r := range per {
		rows = append(rows, r...)
	}
	SortRows(rows)
	return rows
}

func openAndList(ctx context.Context, name string, open opener) ([]ContainerRow, error) {
	e, err := open(name)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	return listHost(ctx, e)
}

// SortRows orders rows by context, then container.
func SortRows(rows []ContainerRow) {
	slices.SortStableFunc(rows, func(a, b ContainerRow) int {
		return cmp.Or(cmp.Compare(a.Context, b.Context), cmp.Compare(a.Container, b.Container))
	})
}
