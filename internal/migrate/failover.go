package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// FailoverResult says what a failover did.
type FailoverResult struct {
	Container string   `json:"container"`
	Volumes   []string `json:"volumes"`
	Restarted bool     `json:"restarted"`
	// Released lists the source exports closed; Warnings what could not
	// be done on the source (which may be gone for good).
	Released      []string `json:"released"`
	RemovedSource bool     `json:"removed_source"`
	Warnings      []string `json:"warnings,omitempty"`
}

// failover ends container name's dependence on the host it moved from,
// on engine e, where it runs now: once every moved volume's copy is
// complete, it restarts the container (if running) so its volumes settle
// into plain local ones, then releases the source's exports and, if
// asked, removes the source container and volumes. It reaches the
// sources through open.
func failover(ctx context.Context, e Engine, open opener, name string, opts FailoverOptions) (*FailoverResult, error) {
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	api, waiting := e.API, opts.Waiting
	insp, err := api.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	if err != nil {
		return nil, err
	}
	ctr := insp.Container
	name = strings.TrimPrefix(ctr.Name, "/")
	res := &FailoverResult{Container: name}
	rows, err := statuses(ctx, api, []string{name})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s has no moved volumes: there is nothing to fail over", name)
	}
	for {
		if err := copyFailed(rows); err != nil {
			return nil, err
		}
		if left := unfinished(rows); len(left) == 0 {
			break
		} else if !opts.Wait {
			return nil, fmt.Errorf("the copy of %s's volumes is not complete: %s; run `docker migrate failover --wait %s` to wait for it", name, strings.Join(left, "; "), name)
		}
		if waiting != nil {
			waiting(rows)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(opts.Poll):
		}
		if rows, err = statuses(ctx, api, []string{name}); err != nil {
			return nil, err
		}
	}
	if waiting != nil {
		waiting(rows)
	}
	for _, r := range rows {
		res.Volumes = append(res.Volumes, r.Volume)
	}
	if err := movingFrom(ctx, open, name, rows); err != nil {
		return nil, err
	}

	// A volume settles when nothing uses it: restart the container so its
	// volumes come back as plain local directories.
	if unsettled(rows) && ctr.State != nil && ctr.State.Running {
		if _, err := api.ContainerRestart(ctx, ctr.ID, client.ContainerRestartOptions{}); err != nil {
			return nil, fmt.Errorf("restarting %s so its volumes settle: %w", name, err)
		}
		res.Restarted = true
		if rows, err = statuses(ctx, api, []string{name}); err != nil {
			return nil, err
		}
	}
	for _, r := range rows {
		if !r.Settled {
			res.Warnings = append(res.Warnings, fmt.Sprintf("volume %s is complete but still in use by another container; it becomes local once no container uses it", r.Volume))
		}
	}

	released, removed, warnings := releaseSources(ctx, open, name, rows, opts.RemoveSource)
	res.Released, res.RemovedSource = released, removed
	res.Warnings = append(res.Warnings, warnings...)
	return res, nil
}

func copyFailed(rows []VolumeStatus) error {
	var errs []error
	for _, r := range rows {
		if r.State == volstatus.StateFailed {
			errs = append(errs, fmt.Errorf("the copy of volume %s failed: %s; see `docker plugin inspect cargo` and the engine's log", r.Volume, r.Error))
		}
	}
	return errors.Join(errs...)
}

func unfinished(rows []VolumeStatus) []string {
	var out []string
	for _, r := range rows {
		if r.State == volstatus.StateComplete {
			continue
		}
		pct := 0.0
		if r.BytesTotal > 0 {
			pct = 100 * float64(r.BytesCopied) / float64(r.BytesTotal)
		}
		out = append(out, fmt.Sprintf("volume %s is %s, %.0f%% (%s of %s), ETA %s", r.Volume, r.State, pct,
			units.BytesSize(float64(r.BytesCopied)), units.BytesSize(float64(r.BytesTotal)), r.ETA))
	}
	return out
}

func unsettled(rows []VolumeStatus) bool {
	for _, r := range rows {
		if !r.Settled {
			return true
		}
	}
	return false
}

// releaseSources removes the export volumes on the hosts the volumes
// came from and, with remove, the stopped source container and volumes.
// The target needs nothing from them any more, so trouble there is a
// warning, not a failure: the source host may be gone for good.
func releaseSources(ctx context.Context, open opener, name string, rows []VolumeStatus, remove bool) (released []string, removed bool, warnings []string) {
	bySource := map[string][]string{}
	var order []string
	for _, r := range rows {
		if r.SourceContext == "" {
			warnings = append(warnings, fmt.Sprintf("volume %s was not moved by docker migrate; release its export on %s by hand (`docker volume rm %s%s` there)", r.Volume, r.Source, r.Volume, ExportSuffix))
			continue
		}
		if _, ok := bySource[r.SourceContext]; !ok {
			order = append(order, r.SourceContext)
		}
		bySource[r.SourceContext] = append(bySource[r.SourceContext], r.Volume)
	}
	removed = remove && len(order) > 0
	for _, sc := range order {
		rel, ok := releaseSource(ctx, open, sc, name, bySource[sc], remove, &warnings)
		released = append(released, rel...)
		if !ok {
			removed = false
		}
	}
	return released, removed, warnings
}

// releaseSource closes the exports of vols on source context sc and, with
// remove, removes the source container and vols there. ok is false when
// something was left there.
func releaseSource(ctx context.Context, open opener, sc, name string, vols []string, remove bool, warnings *[]string) (released []string, ok bool) {
	src, err := open(sc)
	if err != nil {
		*warnings = append(*warnings, fmt.Sprintf("source %s is unreachable (%v); nothing there is needed any more", sc, err))
		return nil, false
	}
	defer src.Close()
	if _, err := src.API.Ping(ctx, client.PingOptions{}); err != nil {
		*warnings = append(*warnings, fmt.Sprintf("source %s is unreachable (%v); nothing there is needed any more", sc, err))
		return nil, false
	}
	for _, v := range vols {
		_, err := src.API.VolumeRemove(ctx, v+ExportSuffix, client.VolumeRemoveOptions{})
		switch {
		case err == nil:
			released = append(released, sc+"/"+v+ExportSuffix)
		case cerrdefs.IsNotFound(err):
		default:
			*warnings = append(*warnings, fmt.Sprintf("releasing the export of %s on %s: %v", v, sc, err))
		}
	}
	if remove && !removeSource(ctx, src.API, sc, name, vols, warnings) {
		return released, false
	}
	return released, true
}

// removeSource removes the stopped source container, then its moved
// volumes. A running source container is left alone.
func removeSource(ctx context.Context, api client.APIClient, sc, name string, vols []string, warnings *[]string) bool {
	insp, err := api.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
	case err != nil:
		*warnings = append(*warnings, fmt.Sprintf("source container %s on %s: %v", name, sc, err))
		return false
	case insp.Container.State != nil && insp.Container.State.Running:
		*warnings = append(*warnings, fmt.Sprintf("source container %s on %s is running again; left it and its volumes alone", name, sc))
		return false
	default:
		if _, err := api.ContainerRemove(ctx, insp.Container.ID, client.ContainerRemoveOptions{}); err != nil {
			*warnings = append(*warnings, fmt.Sprintf("removing source container %s on %s: %v", name, sc, err))
			return false
		}
	}
	ok := true
	for _, v := range vols {
		if _, err := api.VolumeRemove(ctx, v, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			*warnings = append(*warnings, fmt.Sprintf("removing source volume %s on %s: %v", v, sc, err))
			ok = false
		}
	}
	// The move's record goes with the container it recorded.
	pruneRecords(ctx, api)
	return ok
}

// movingFrom refuses a failover while a docker migrate still drives the
// move of container name on one of its sources: releasing the exports
// and removing the source then would pull them from under it. A source
// that cannot be asked within a few seconds says nothing: failover is
// also for a source that is gone.
func movingFrom(ctx context.Context, open opener, name string, rows []VolumeStatus) error {
	seen := map[string]bool{}
	for _, r := range rows {
		if r.SourceContext == "" || seen[r.SourceContext] {
			continue
		}
		seen[r.SourceContext] = true
		src, err := open(r.SourceContext)
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		all, err := records(pctx, src.API)
		for _, rec := range all {
			if err == nil && rec.Container == name {
				err = busy(pctx, src.API, rec, "")
				if err != nil {
					break
				}
			}
		}
		cancel()
		src.Close()
		if errors.Is(err, errMoveBusy) {
			return fmt.Errorf("failing over %s: %w", name, err)
		}
	}
	return nil
}
