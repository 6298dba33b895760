package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"

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
	Running bool `json:"running"`
	// Live is set when the container's processes moved: restored on the
	// target from a checkpoint.
	Live    bool     `json:"live,omitempty"`
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

// mover holds one move's state. What the move changed is in rec, also
// kept on the source host, so that a failure, an interrupt or a later
// `docker migrate rollback` can undo it and a new run can finish it.
type mover struct {
	src, dst Engine
	opts     MoveOptions
	res      *Result
	ctr      container.InspectResponse

	report *Report
	// rec is nil until the move is about to change the source.
	rec *moveRecord
	// resumed is set when this run finishes an interrupted one.
	resumed bool
	stopAt  time.Time
	// runningAt is when the target's start (or restore) returned.
	runningAt time.Time
	layer     *layer // the source's changes outside its volumes
	targetID  string
	// ckpt is a live move's checkpoint export, once open.
	ckpt *checkpointExport
}

// move moves container name from src to dst, phase by phase, or finishes
// the interrupted move of it to dst. Any failure once the move changed
// something is rolled back: the source is restored first (its volumes
// released, its restart policy back, the container started if it ran),
// then what was made on the target is removed.
func move(ctx context.Context, src, dst Engine, name string, opts MoveOptions) (*Result, error) {
	// The record's saves carry this run's lease, renewed until the move
	// and any rollback of it are over.
	ctx, lease := takeLease(ctx)
	defer lease.end()
	m := &mover{src: src, dst: dst, opts: opts,
		res: &Result{Container: name, Source: src.Context, Target: dst.Context}}
	pruneRecords(ctx, src.API)
	err := m.run(ctx)
	m.layer.Close()
	if err == nil || m.rec == nil {
		if err != nil {
			return nil, err
		}
		return m.res, nil
	}
	if lerr := lease.lostErr(); lerr != nil {
		// Another run drives the move now, or may: undoing it would
		// undo that run's work.
		return nil, lerr
	}
	// The caller's context may be what failed (Ctrl-C): roll back on
	// fresh ones, each side with its own deadline.
	rb, rerr := rollbackMove(src, &dst, m.rec, false)
	hctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if herr := m.hook(hctx, HookFailedRestore, opts.Hooks.FailedRestore, err); herr != nil {
		rerr = errors.Join(rerr, herr)
	}
	if rerr != nil {
		return nil, fmt.Errorf("%w; rolling back also failed: %w; retry with `%s`", err, rerr, m.rec.RollbackCommand())
	}
	msg := fmt.Sprintf("%s is left on %s as it was", m.res.Container, src.Context)
	switch {
	case rb.Restored:
		msg = fmt.Sprintf("%s runs on %s again, restored from its checkpoint", m.res.Container, src.Context)
	case rb.Restarted:
		msg = fmt.Sprintf("%s runs on %s again", m.res.Container, src.Context)
	}
	if len(rb.Warnings) > 0 {
		msg += " (" + strings.Join(rb.Warnings, "; ") + ")"
	}
	return nil, fmt.Errorf("%w; rolled back: %s", err, msg)
}

// phaseOrder is the order of a move's phases.
// A live move checkpoints instead of stopping, carries the checkpoint
// and restores instead of starting.
var phaseOrder = []string{"check", "image", "stop", "checkpoint", "layer", "volumes", "create", "transfer", phaseStart, phaseRestore}

func phaseIndex(name string) int { return slices.Index(phaseOrder, name) }

// step is one phase of a move: its name, and what it does, which returns
// the phase's detail.
type step struct {
	name string
	do   func(ctx context.Context) (string, error)
}

// run goes through the phases in order, the restore hooks around the
// target's part.
func (m *mover) run(ctx context.Context) error {
	if err := m.phases(ctx, step{"check", m.check}); err != nil {
		return err
	}
	if m.rec != nil && m.rec.Done() {
		// An earlier run, killed, had started it on the target.
		m.res.Running, m.res.Volumes = m.rec.WasRunning, m.rec.Volumes
		m.res.Warnings = append(m.res.Warnings, "an earlier run of this move had already finished it")
		return nil
	}
	stop, start := step{"stop", m.stop}, []step{{"create", m.create}, {phaseStart, m.start}}
	if m.opts.Live {
		stop, start = step{"checkpoint", m.checkpoint}, []step{{"create", m.create}, {"transfer", m.transfer}, {phaseRestore, m.restore}}
	}
	if err := m.phases(ctx, step{"image", m.image}, stop,
		step{"layer", m.captureLayer}, step{"volumes", m.moveVolumes}); err != nil {
		return err
	}
	if err := m.hook(ctx, HookPreRestore, m.opts.Hooks.PreRestore, nil); err != nil {
		return err
	}
	if err := m.phases(ctx, start...); err != nil {
		return err
	}
	if m.opts.Live {
		m.dropCheckpoint(ctx)
		m.res.Live = true
	}
	if m.rec.WasRunning {
		// From the freeze to the target's start returning: the record's
		// save and the checkpoint's removal come after, while it runs.
		m.res.Downtime = m.runningAt.Sub(m.stopAt)
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
		if err == nil && m.rec != nil && phaseIndex(s.name) > phaseIndex(m.rec.Phase) {
			m.rec.Phase = s.name
			err = m.rec.save(ctx, m.src.API)
			if err != nil && (s.name == phaseStart || s.name == phaseRestore) {
				// The container runs on the target: nothing may undo
				// that now. A later run finds it running there.
				m.res.Warnings = append(m.res.Warnings, err.Error())
				err = nil
			}
		}
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
