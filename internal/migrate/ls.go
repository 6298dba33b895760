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
)

// Lister is what `docker migrate ls` asks of each engine.
type Lister interface {
	Ping(ctx context.Context, options client.PingOptions) (client.PingResult, error)
	ContainerList(ctx context.Context, options client.ContainerListOptions) (client.ContainerListResult, error)
	VolumeInspect(ctx context.Context, volumeID string, options client.VolumeInspectOptions) (client.VolumeInspectResult, error)
	VolumeList(ctx context.Context, options client.VolumeListOptions) (client.VolumeListResult, error)
}

// Migration states of a container, as `docker migrate ls` shows them.
const (
	MigrationNone     = "-"
	MigrationMovedOut = "moved out"
	MigrationMovedIn  = "moved in"
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
	// "complete", "complete, local" (settled: the source is no longer
	// needed) or "failed".
	Progress    string `json:"progress,omitempty"`
	BytesCopied int64  `json:"bytes_copied"`
	BytesTotal  int64  `json:"bytes_total"`
	Error       string `json:"error,omitempty"`
}

// namedStatus is one cargo volume's Status.
type namedStatus struct {
	Volume string
	Status map[string]any
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
	str := func(st map[string]any, k string) string { s, _ := st[k].(string); return s }
	num := func(st map[string]any, k string) int64 { f, _ := st[k].(float64); return int64(f) }
	for _, v := range vols {
		st := v.Status
		switch str(st, "state") {
		case "exporting":
			if to := str(st, "to"); !slices.Contains(out, to) {
				out = append(out, to)
			}
			continue
		case stateExported:
			if to := str(st, "to"); !slices.Contains(outDone, to) {
				outDone = append(outDone, to)
			}
			continue
		}
		src := str(st, "source")
		isSettled, _ := st["settled"].(bool)
		if src == "" && !isSettled {
			continue
		}
		federated++
		if src != "" && !slices.Contains(in, src) {
			in = append(in, src)
		}
		copied += num(st, "bytes_copied")
		total += num(st, "bytes_total")
		switch {
		case isSettled:
			settled++
		case str(st, "state") == "complete":
			complete++
		case str(st, "state") == "failed":
			failed++
		case str(st, "state") == "stalled":
			stalled++
		}
		if e := str(st, "error"); e != "" {
			errs = append(errs, v.Volume+": "+e)
		}
	}
	switch {
	case len(out) > 0:
		r.Migration, r.To = MigrationMovedOut, strings.Join(out, ", ")
		return
	case len(outDone) > 0 && federated == 0:
		// The target has every file; only its failover is left.
		r.Migration, r.To, r.Progress = MigrationMovedOut, strings.Join(outDone, ", "), "copied"
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
		r.Progress = "failed"
	case settled == federated:
		// Every file is local: nothing depends on the source any more.
		r.Progress = "complete, local"
	case complete+settled == federated:
		r.Progress = "complete"
	default:
		r.Progress = fmt.Sprintf("%d%%", percent(copied, total))
		if stalled > 0 {
			r.Progress += " stalled"
		}
	}
}

// percent rounds down, so an unfinished copy never shows 100%.
func percent(copied, total int64) int {
	if total <= 0 {
		return 0
	}
	return int(min(copied*100/total, 99))
}

// ListHost lists every container of one engine with its migration.
// An error means the engine could not be listed at all; a volume that
// cannot be inspected only marks its container's row.
func ListHost(ctx context.Context, contextName string, api Lister) ([]ContainerRow, error) {
	if _, err := api.Ping(ctx, client.PingOptions{}); err != nil {
		return nil, fmt.Errorf("cannot reach the engine of docker context %q: %w", contextName, err)
	}
	l, err := api.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("listing containers on %s: %w", contextName, err)
	}
	// Volumes can be shared: inspect each once.
	type inspected struct {
		st  map[string]any
		err error
	}
	seen := map[string]inspected{}
	exports := exportsOf(ctx, api)
	rows := make([]ContainerRow, 0, len(l.Items))
	for _, c := range l.Items {
		r := ContainerRow{Context: contextName, ID: c.ID, Image: c.Image, State: string(c.State), Status: c.Status}
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
				v, err := api.VolumeInspect(ctx, m.Name, client.VolumeInspectOptions{})
				in = inspected{v.Volume.Status, err}
				seen[m.Name] = in
			}
			if in.err != nil {
				errs = append(errs, fmt.Sprintf("inspecting volume %s: %v", m.Name, in.err))
				continue
			}
			vols = append(vols, namedStatus{m.Name, in.st})
		}
		r.setMigration(vols)
		if r.Error != "" {
			errs = append(errs, r.Error)
		}
		r.Error = strings.Join(errs, "; ")
		rows = append(rows, r)
	}
	return rows, nil
}

// stateExported marks, in ls, a volume whose export is complete but not
// yet released by failover.
const stateExported = "exported"

// exportsOf maps each volume exported from this engine to its export's
// state: "exporting" while the copy runs, stateExported once it is done.
// Trouble here only hides the exports.
func exportsOf(ctx context.Context, api Lister) map[string]map[string]any {
	out := map[string]map[string]any{}
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
		st := insp.Volume.Status
		vol, _ := st["volume"].(string)
		if vol == "" {
			continue
		}
		state := "exporting"
		if st["state"] == "complete" {
			state = stateExported
		}
		out[vol] = map[string]any{"state": state, "to": st["to"]}
	}
	return out
}

// Host is one docker context for ListHosts.
type Host struct {
	Context string
	Current bool
	// Connect makes the context's client; an error makes the context
	// unreachable.
	Connect func() (Lister, error)
}

// ListHosts lists every host at once, each within timeout, so that one
// slow or dead host costs the timeout once rather than once per host. A
// host that cannot be listed is one row of state "unreachable". Rows are
// sorted by context, then container.
func ListHosts(ctx context.Context, hosts []Host, timeout time.Duration) []ContainerRow {
	per := make([][]ContainerRow, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			rows, err := listHost(ctx, h)
			if err != nil {
				rows = []ContainerRow{{Context: h.Context, State: StateUnreachable, Error: err.Error()}}
			}
			for j := range rows {
				rows[j].Current = h.Current
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

func listHost(ctx context.Context, h Host) ([]ContainerRow, error) {
	api, err := h.Connect()
	if err != nil {
		return nil, err
	}
	return ListHost(ctx, h.Context, api)
}

// SortRows orders rows by context, then container.
func SortRows(rows []ContainerRow) {
	slices.SortStableFunc(rows, func(a, b ContainerRow) int {
		return cmp.Or(cmp.Compare(a.Context, b.Context), cmp.Compare(a.Container, b.Container))
	})
}
