package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/failpoint"
)

// Phase is one step of a move and how long it took.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
	Detail   string        `json:"detail,omitempty"`
}

// Result describes a finished move.
type Result struct {
	Container string  `json:"container"`
	Source    string  `json:"source"`
	Target    string  `json:"target"`
	Phases    []Phase `json:"phases"`
	// Downtime runs from the stop on the source to the start on the target.
	Downtime time.Duration `json:"downtime_ns"`
	// Running is false when the container was not running on the source:
	// it is then left stopped on the target too.
	Running bool     `json:"running"`
	Volumes []string `json:"volumes"`
	// Warnings tell what went wrong without stopping the move, such as a
	// failed post-restore hook.
	Warnings []string `json:"warnings,omitempty"`
}

// Progress hears of a move's phases as they start and end.
type Progress interface {
	PhaseStarted(name string)
	PhaseDone(p Phase)
}

// ExportSuffix names the export volume of a volume being moved.
const ExportSuffix = ".cargo-export"

// mover holds one move's state, so a failure can be rolled back.
type mover struct {
	src, dst Engine
	opts     MoveOptions
	res      *Result
	ctr      container.InspectResponse

	report   *Report
	stopped  bool
	stopAt   time.Time
	layer    *layer   // the source's changes outside its volumes
	exports  []string // export volumes created on the source
	volumes  []string // volumes created on the target
	networks []string // networks created on the target
	targetID string
}

// move moves container name from src to dst, phase by phase. Any failure
// once the move changed something is rolled back: what was made on the
// target is removed, the exports are closed, and the source container
// starts again if it ran.
func move(ctx context.Context, src, dst Engine, name string, opts MoveOptions) (*Result, error) {
	m := &mover{src: src, dst: dst, opts: opts,
		res: &Result{Container: name, Source: src.Context, Target: dst.Context}}
	err := m.run(ctx)
	m.layer.Close()
	if err != nil && m.touched() {
		// The caller's context may be what failed (Ctrl-C): roll back on
		// a fresh one.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		rerr := m.rollback(rctx)
		if herr := m.hook(rctx, HookFailedRestore, opts.Hooks.FailedRestore, err); herr != nil {
			rerr = errors.Join(rerr, herr)
		}
		if rerr != nil {
			return nil, fmt.Errorf("%w; rolling back also failed: %w", err, rerr)
		}
		if !m.stopped {
			return nil, fmt.Errorf("%w; rolled back: %s is left on %s as it was", err, m.res.Container, src.Context)
		}
		return nil, fmt.Errorf("%w; rolled back: %s runs on %s again", err, m.res.Container, src.Context)
	}
	return m.res, err
}

// step is one phase of a move: its name, and what it does, which returns
// the phase's detail.
type step struct {
	name string
	do   func(ctx context.Context) (string, error)
}

// run goes through the phases in order, the restore hooks around the
// target's part.
func (m *mover) run(ctx context.Context) error {
	if err := m.phases(ctx, step{"check", m.check}, step{"image", m.image}, step{"stop", m.stop},
		step{"layer", m.captureLayer}, step{"volumes", m.moveVolumes}); err != nil {
		return err
	}
	if err := m.hook(ctx, HookPreRestore, m.opts.Hooks.PreRestore, nil); err != nil {
		return err
	}
	if err := m.phases(ctx, step{"create", m.create}, step{"start", m.start}); err != nil {
		return err
	}
	if m.stopped {
		m.res.Downtime = time.Since(m.stopAt)
		m.res.Running = true
	}
	if err := m.hook(ctx, HookPostRestore, m.opts.Hooks.PostRestore, nil); err != nil {
		m.res.Warnings = append(m.res.Warnings, err.Error())
	}
	return nil
}

// phases runs steps one after the other, each as a phase, and stops at
// the first that fails. The failpoint migrate.after-NAME follows each
// phase that succeeded, so that a test can fail or kill the move there.
func (m *mover) phases(ctx context.Context, steps ...step) error {
	for _, s := range steps {
		start := time.Now()
		if m.opts.Progress != nil {
			m.opts.Progress.PhaseStarted(s.name)
		}
		detail, err := s.do(ctx)
		if err == nil {
			err = failpoint.Inject("migrate.after-" + s.name)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		p := Phase{Name: s.name, Duration: time.Since(start), Detail: detail}
		m.res.Phases = append(m.res.Phases, p)
		if m.opts.Progress != nil {
			m.opts.Progress.PhaseDone(p)
		}
	}
	return nil
}

// hook runs one of the user's hooks, if set.
func (m *mover) hook(ctx context.Context, which, command string, cause error) error {
	out := m.opts.HookOutput
	if out == nil {
		out = io.Discard
	}
	env := HookEnv{Container: m.res.Container, ContainerID: m.ctr.ID, Source: m.src.Context, Target: m.dst.Context}
	if cause != nil {
		env.Error = cause.Error()
	}
	return runHook(ctx, which, command, env, out)
}

// rollback undoes what the move did after the stop.
func (m *mover) rollback(ctx context.Context) error {
	var errs []error
	if m.targetID != "" {
		if _, err := m.dst.API.ContainerRemove(ctx, m.targetID, client.ContainerRemoveOptions{Force: true}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, v := range m.volumes {
		if _, err := m.dst.API.VolumeRemove(ctx, v, client.VolumeRemoveOptions{Force: true}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range m.networks {
		if _, err := m.dst.API.NetworkRemove(ctx, n, client.NetworkRemoveOptions{}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range m.exports {
		if _, err := m.src.API.VolumeRemove(ctx, c, client.VolumeRemoveOptions{Force: true}); err != nil {
			errs = append(errs, err)
		}
	}
	if m.stopped {
		if _, err := m.src.API.ContainerStart(ctx, m.ctr.ID, client.ContainerStartOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("starting %s on %s again: %w", m.res.Container, m.src.Context, err))
		}
	}
	return errors.Join(errs...)
}

// touched reports whether the move changed anything to roll back.
func (m *mover) touched() bool {
	return m.stopped || m.targetID != "" || len(m.volumes) > 0 || len(m.exports) > 0 || len(m.networks) > 0
}
