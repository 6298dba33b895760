package migrate

// Finishing an interrupted move: a run of `docker migrate CONTAINER --to
// TARGET` that finds the container's move recorded on the source picks
// it up. Every phase can be done again: the source stays stopped, the
// exports and the target's volumes are found as they were made, and a
// target container that never started is made anew.

import (
	"context"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// resume reads the record of an earlier, interrupted move of the
// container, if any, and readies the target for finishing it.
func (m *mover) resume(ctx context.Context) error {
	insp, err := m.src.API.ContainerInspect(ctx, m.res.Container, client.ContainerInspectOptions{})
	if err != nil {
		return nil // the checks say what is wrong
	}
	rec, err := recordOf(ctx, m.src.API, insp.Container.ID)
	if err != nil || rec == nil {
		return err
	}
	if err := busy(ctx, m.src.API, rec, ""); err != nil {
		return err
	}
	switch {
	case rec.Target != m.dst.Context:
		return fmt.Errorf("%s has an unfinished move to %s (stopped after its %s phase): finish it with `%s`, or undo it with `%s`",
			rec.Container, rec.Target, rec.Phase, rec.FinishCommand(), rec.RollbackCommand())
	case rec.Done():
		return m.finished(ctx, rec)
	case rec.Checkpoint != "" && !m.opts.Live:
		return fmt.Errorf("the interrupted move of %s was live, and its processes are in a checkpoint: finish it with `%s`, or undo it with `%s`",
			rec.Container, rec.FinishCommand(), rec.RollbackCommand())
	}
	// Taking the move over is the compare-and-set of its next version:
	// of two reruns at once, one gets it and the other changes nothing.
	if err := rec.claim(ctx, m.src.API); err != nil {
		return err
	}
	m.rec, m.resumed = rec, true
	return m.clearTarget(ctx)
}

// finished handles a run of a move that an earlier run finished: it is
// done if the container is still on the target.
func (m *mover) finished(ctx context.Context, rec *moveRecord) error {
	_, err := m.dst.API.ContainerInspect(ctx, rec.TargetID, client.ContainerInspectOptions{})
	switch {
	case err == nil:
		m.rec = rec
		return nil
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s moved to %s earlier, and it is no longer there: to run it on %s again, run `%s`", rec.Container, rec.Target, rec.Source, rec.RollbackCommand())
	}
	return fmt.Errorf("asking %s about %s: %w", m.dst.Context, rec.Container, err)
}

// clearTarget removes the target container an interrupted move made but
// never started, so that the create phase makes it anew with the whole
// layer. One the move had started marks the move done.
func (m *mover) clearTarget(ctx context.Context) error {
	ref := m.rec.TargetID
	if ref == "" && phaseIndex(m.rec.Phase) >= phaseIndex("volumes") {
		// The CLI may have died between making it and recording it.
		ref = m.rec.Container
	}
	if ref == "" {
		return nil
	}
	insp, err := m.dst.API.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		m.rec.TargetID = ""
		return nil
	case err != nil:
		return fmt.Errorf("asking %s about %s: %w", m.dst.Context, ref, err)
	}
	c := insp.Container
	started := everStarted(c.State.StartedAt)
	if m.rec.TargetID == "" {
		// Ours only if made since the record's last update and never
		// started: else the checks report the name as taken.
		created, err := time.Parse(time.RFC3339Nano, c.Created)
		if err != nil || created.Before(m.rec.Updated.Add(-time.Second)) || started {
			return nil
		}
	}
	if started {
		m.rec.TargetID, m.rec.Phase = c.ID, phaseStart
		return m.rec.save(ctx, m.src.API)
	}
	if _, err := m.dst.API.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
		return fmt.Errorf("removing the half-made %s on %s: %w", m.rec.Container, m.dst.Context, err)
	}
	m.rec.TargetID = ""
	return m.rec.save(ctx, m.src.API)
}

// everStarted reports whether a container's StartedAt says it ran.
func everStarted(startedAt string) bool {
	t, err := time.Parse(time.RFC3339Nano, startedAt)
	return err == nil && t.Year() > 1
}
