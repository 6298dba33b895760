package migrate

// Undoing a move: `docker migrate rollback CONTAINER` on the source's
// context, and the rollback of a move that failed or was interrupted.
// The source comes first, each side with its own deadline, so that a
// target that is down or black-holed never keeps the container from
// running again where it was.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// RollbackResult says what a rollback did.
type RollbackResult struct {
	Container string `json:"container"`
	Source    string `json:"source"`
	Target    string `json:"target"`
	// Phase is the last phase the move had done.
	Phase string `json:"phase"`
	// Restarted is set when the source container runs again; Restored
	// when a live move's processes go on there from their checkpoint.
	Restarted bool `json:"restarted"`
	Restored  bool `json:"restored,omitempty"`
	// Released lists the exports closed on the source.
	Released []string `json:"released"`
	// Removed lists what was removed on the target.
	Removed []string `json:"removed"`
	// Warnings say what is left on the target, with the commands that
	// remove it.
	Warnings []string `json:"warnings,omitempty"`
}

// RollbackOptions change what a rollback accepts.
type RollbackOptions struct {
	// Force rolls back a move whose container may run on the target: it
	// is stopped there first (if the target can be reached), and what it
	// wrote there since is lost.
	Force bool
}

// Deadlines of a rollback's parts. The source's is the longest: starting
// a container can take a while, and nothing matters more.
const (
	rollbackProbe  = 15 * time.Second
	rollbackSource = 2 * time.Minute
	rollbackTarget = time.Minute
)

// rollback undoes the recorded move of container name on src.
func rollback(ctx context.Context, src Engine, open opener, name string, opts RollbackOptions) (*RollbackResult, error) {
	insp, err := src.API.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", name, src.Context, err)
	}
	rec, err := recordOf(ctx, src.API, insp.Container.ID)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("no move of %s is recorded on %s: there is nothing to roll back", strings.TrimPrefix(insp.Container.Name, "/"), src.Context)
	}
	if err := busy(ctx, src.API, rec, ""); err != nil && !opts.Force {
		return nil, fmt.Errorf("%w (or roll back with --force if you are sure it no longer runs)", err)
	}
	// The rollback holds the move while it runs: a run it overrode with
	// --force loses it at its next save and stops.
	ctx, lease := takeLease(ctx)
	defer lease.end()
	if err := rec.claim(ctx, src.API); err != nil {
		return nil, err
	}
	var dst *Engine
	if e, err := open(rec.Target); err == nil {
		defer e.Close()
		dst = &e
	}
	return rollbackMove(src, dst, rec, opts.Force)
}

// rollbackMove undoes the move rec records: the source is restored first
// (exports closed, restart policy back, the container started if it
// ran), then what the move made on the target is removed. dst is nil
// when the target's context cannot be opened. It refuses, unless force,
// when the container may run on the target.
func rollbackMove(src Engine, dst *Engine, rec *moveRecord, force bool) (*RollbackResult, error) {
	res := &RollbackResult{Container: rec.Container, Source: rec.Source, Target: rec.Target, Phase: rec.Phase}
	reachable, err := targetAllows(dst, rec, force)
	if err != nil {
		return nil, err
	}
	if err := restoreSource(src, rec, res); err != nil {
		return res, err
	}
	if reachable {
		clearTargetObjects(*dst, rec, res)
	} else {
		res.Warnings = append(res.Warnings, leftovers(rec)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rollbackSource)
	defer cancel()
	if err := rec.remove(ctx, src.API); err != nil {
		res.Warnings = append(res.Warnings, err.Error())
	}
	return res, nil
}

// targetAllows asks the target whether the move's container runs there,
// within its own deadline, and stops it there with force. It reports
// whether the target could be reached.
func targetAllows(dst *Engine, rec *moveRecord, force bool) (bool, error) {
	if dst == nil {
		return false, maybeRunning(rec, force, "its context cannot be opened")
	}
	ctx, cancel := context.WithTimeout(context.Background(), rollbackProbe)
	defer cancel()
	if _, err := dst.API.Ping(ctx, client.PingOptions{}); err != nil {
		return false, maybeRunning(rec, force, "it cannot be reached: "+err.Error())
	}
	if rec.TargetID == "" {
		return true, nil
	}
	insp, err := dst.API.ContainerInspect(ctx, rec.TargetID, client.ContainerInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, maybeRunning(rec, force, err.Error())
	case !insp.Container.State.Running:
		return true, nil
	case !force:
		return true, fmt.Errorf("%s runs on %s: the move finished, and rolling it back would lose what it wrote there; move it back with `docker --context %s migrate %s --to %s`, or roll back with --force to stop it there",
			rec.Container, rec.Target, rec.Target, rec.Container, rec.Source)
	}
	if _, err := dst.API.ContainerStop(ctx, rec.TargetID, client.ContainerStopOptions{}); err != nil {
		return true, fmt.Errorf("stopping %s on %s before starting it on %s again: %w", rec.Container, rec.Target, rec.Source, err)
	}
	return true, nil
}

// maybeRunning refuses, unless force, to roll back a move whose target
// cannot be asked once the container may have started there.
func maybeRunning(rec *moveRecord, force bool, why string) error {
	if force || !rec.Starting && !rec.Done() {
		return nil
	}
	return fmt.Errorf("%s may run on %s, which cannot be asked (%s): starting it on %s too could run it twice; make sure it does not run there, then roll back with --force",
		rec.Container, rec.Target, why, rec.Source)
}

// restoreSource closes the move's exports, puts the source container's
// restart policy back and starts it if it ran, within its own deadline.
func restoreSource(src Engine, rec *moveRecord, res *RollbackResult) error {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackSource)
	defer cancel()
	var errs []error
	for _, c := range rec.Exports {
		_, err := src.API.VolumeRemove(ctx, c, client.VolumeRemoveOptions{Force: true})
		switch {
		case err == nil:
			res.Released = append(res.Released, c)
		case !cerrdefs.IsNotFound(err):
			errs = append(errs, fmt.Errorf("closing export %s: %w", c, err))
		}
	}
	if p := rec.RestartPolicy; p.Name != "" && p.Name != container.RestartPolicyDisabled {
		if _, err := src.API.ContainerUpdate(ctx, rec.ContainerID, client.ContainerUpdateOptions{RestartPolicy: &p}); err != nil {
			errs = append(errs, fmt.Errorf("restoring the restart policy %q: %w", p.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restoring %s on %s: %w", rec.Container, rec.Source, err)
	}
	if !rec.WasRunning {
		return nil
	}
	insp, err := src.API.ContainerInspect(ctx, rec.ContainerID, client.ContainerInspectOptions{})
	if err == nil && insp.Container.State != nil && insp.Container.State.Running {
		// A checkpoint that failed left it running.
		res.Restarted = true
		return nil
	}
	if rec.Checkpoint != "" {
		// A live move: its processes go on from the checkpoint.
		err := restoreFromCheckpoint(ctx, src, rec.ContainerID, rec.Checkpoint)
		if err == nil {
			res.Restarted, res.Restored = true, true
			_, _ = src.API.CheckpointRemove(ctx, rec.ContainerID, client.CheckpointRemoveOptions{CheckpointID: rec.Checkpoint})
			return nil
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("restoring %s on %s from its checkpoint failed (%v); it starts afresh", rec.Container, rec.Source, err))
	}
	if _, err := src.API.ContainerStart(ctx, rec.ContainerID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("starting %s on %s again: %w", rec.Container, rec.Source, err)
	}
	res.Restarted = true
	if rec.Checkpoint != "" {
		_, _ = src.API.CheckpointRemove(ctx, rec.ContainerID, client.CheckpointRemoveOptions{CheckpointID: rec.Checkpoint})
	}
	return nil
}

// restoreFromCheckpoint starts id from its checkpoint. Engine 28.5's
// containerd 2.1 may refuse the upload of a checkpoint whose content it
// still holds from the checkpoint's own creation ("commit failed: content
// ... already exists") until its garbage collector has run: nothing
// started, so the restore is tried again, for up to 10 s.
func restoreFromCheckpoint(ctx context.Context, e Engine, id, checkpoint string) error {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 250 * time.Millisecond; ; wait *= 2 {
		_, err := e.API.ContainerStart(ctx, id, client.ContainerStartOptions{CheckpointID: checkpoint})
		if err == nil || !strings.Contains(err.Error(), "already exists") || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// clearTargetObjects removes, within its own deadline, what the move
// made on the target; what it cannot remove is a warning.
func clearTargetObjects(dst Engine, rec *moveRecord, res *RollbackResult) {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTarget)
	defer cancel()
	warn := func(what string, err error, cmd string) {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s on %s is left (%v): remove it with `docker --context %s %s`", what, dst.Context, err, dst.Context, cmd))
	}
	if rec.TargetID != "" {
		_, err := dst.API.ContainerRemove(ctx, rec.TargetID, client.ContainerRemoveOptions{Force: true})
		switch {
		case err == nil:
			res.Removed = append(res.Removed, "container "+rec.Container)
		case !cerrdefs.IsNotFound(err):
			warn("container "+rec.Container, err, "rm -f "+rec.TargetID)
		}
	}
	for _, v := range rec.Volumes {
		_, err := dst.API.VolumeRemove(ctx, v, client.VolumeRemoveOptions{Force: true})
		switch {
		case err == nil:
			res.Removed = append(res.Removed, "volume "+v)
		case !cerrdefs.IsNotFound(err):
			warn("volume "+v, err, "volume rm -f "+v)
		}
	}
	for _, n := range rec.Networks {
		_, err := dst.API.NetworkRemove(ctx, n, client.NetworkRemoveOptions{})
		switch {
		case err == nil:
			res.Removed = append(res.Removed, "network "+n)
		case !cerrdefs.IsNotFound(err):
			warn("network "+n, err, "network rm "+n)
		}
	}
}

// leftovers names what the move may have made on a target that cannot be
// reached, with the commands that remove it.
func leftovers(rec *moveRecord) []string {
	var cmds []string
	if rec.TargetID != "" || phaseIndex(rec.Phase) >= phaseIndex("volumes") {
		cmds = append(cmds, "rm -f "+rec.Container)
	}
	if len(rec.Volumes) > 0 {
		cmds = append(cmds, "volume rm -f "+strings.Join(rec.Volumes, " "))
	}
	if len(rec.Networks) > 0 {
		cmds = append(cmds, "network rm "+strings.Join(rec.Networks, " "))
	}
	if len(cmds) == 0 {
		return nil
	}
	for i, c := range cmds {
		cmds[i] = fmt.Sprintf("`docker --context %s %s`", rec.Target, c)
	}
	return []string{fmt.Sprintf("%s cannot be reached: once it is back, remove what the move made there: %s", rec.Target, strings.Join(cmds, ", "))}
}
