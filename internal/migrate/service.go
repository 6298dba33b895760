// Package migrate moves a container between two Docker engines, each
// behind a docker context, and follows the moved volumes' copy. Service is
// what the CLI calls: Move, Check, Status, Ls and Failover. A move runs in
// phases, one file each: check, image, stop, layer, volumes, create,
// start; move.go drives them and rolls a failed move back.
package migrate

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/client"
)

// Service is docker migrate's operations. The source of a move and the
// engine Status and Failover look at is the current docker context.
type Service interface {
	// Move moves container from the current context to opts.To.
	Move(ctx context.Context, container string, opts MoveOptions) (*Result, error)
	// Check runs the checks of a move and changes nothing.
	Check(ctx context.Context, container string, opts CheckOptions) (*Report, error)
	// Status reports the copy of moved volumes on the current context.
	Status(ctx context.Context, opts StatusOptions) ([]VolumeStatus, error)
	// Ls lists the containers of every docker context and their moves.
	Ls(ctx context.Context, opts LsOptions) ([]ContainerRow, error)
	// Failover ends a moved container's dependence on its source host.
	Failover(ctx context.Context, container string, opts FailoverOptions) (*FailoverResult, error)
	// Rollback undoes the interrupted or failed move of container from
	// the current context.
	Rollback(ctx context.Context, container string, opts RollbackOptions) (*RollbackResult, error)
	// Interrupted lists the moves recorded on the current context that
	// did not finish.
	Interrupted(ctx context.Context) ([]InterruptedMove, error)
	// PlanDrain plans moving every container of opts.Source to
	// opts.To: where each goes and whether its checks pass there. It
	// changes nothing.
	PlanDrain(ctx context.Context, opts DrainOptions) (*DrainPlan, error)
	// Drain makes the moves of plan that passed their checks, a few at
	// once, and tells what became of every container of it.
	Drain(ctx context.Context, plan *DrainPlan, opts DrainOptions) ([]DrainResult, error)
}

// CheckOptions change what the checks accept.
type CheckOptions struct {
	// To is the docker context to move to.
	To string
	// SkipBindMounts lets the container move without its bind mounts.
	SkipBindMounts bool
	// Force lets the move go on past the checks whose failure leaves
	// nothing at risk: the move then either works or rolls back.
	Force bool
	// Live moves the running processes too: a CRIU checkpoint on the
	// source, restored on the target.
	Live bool
}

// MoveOptions are a move's: its checks' and its hooks.
type MoveOptions struct {
	CheckOptions
	// Hooks run around the restore on the target; their output goes to
	// HookOutput (discarded when nil).
	Hooks      Hooks
	HookOutput io.Writer
	// Progress, when not nil, hears of each phase.
	Progress Progress
}

// StatusOptions choose the containers whose volumes Status reports.
type StatusOptions struct {
	// Containers by name; every container when empty.
	Containers []string
}

// LsOptions change how Ls lists.
type LsOptions struct {
	// Timeout bounds each context, so that one unreachable host (an ssh
	// context to a machine that is down) does not hold up the others;
	// DefaultLsTimeout when zero.
	Timeout time.Duration
}

// DefaultLsTimeout is Ls's wait for each context.
const DefaultLsTimeout = 10 * time.Second

// FailoverOptions change what Failover does.
type FailoverOptions struct {
	// Wait waits for the copy to complete instead of refusing.
	Wait bool
	// RemoveSource removes the stopped source container and its moved
	// volumes once the target no longer needs them.
	RemoveSource bool
	// Poll is how often the copy is looked at while waiting.
	Poll time.Duration
	// Waiting, when not nil, is shown the copy's progress while Wait
	// waits, and its end.
	Waiting func([]VolumeStatus)
}

// Contexts reaches the engines of docker contexts by name.
type Contexts interface {
	// Current names the current context.
	Current() string
	// Names lists every docker context, the current one included.
	Names() ([]string, error)
	// Client connects to the engine of the named context, "" for the
	// current one. The caller closes it.
	Client(name string) (client.APIClient, error)
}

// NewService returns the Service working on contexts.
func NewService(contexts Contexts) Service { return &service{contexts: contexts} }

type service struct{ contexts Contexts }

// open connects to the engine of context name, "" for the current one.
func (s *service) open(name string) (Engine, error) {
	if name == "" {
		name = s.contexts.Current()
	}
	api, err := s.contexts.Client(name)
	if err != nil {
		return Engine{}, err
	}
	return Engine{Context: name, API: api}, nil
}

// pair opens the source (the current context) and the target of a move.
// The caller closes both.
func (s *service) pair(to string) (src, dst Engine, err error) {
	if to == s.contexts.Current() {
		return src, dst, fmt.Errorf("--to %s is the current context: choose another one (see `docker context ls`)", to)
	}
	if src, err = s.open(""); err != nil {
		return src, dst, err
	}
	if dst, err = s.open(to); err != nil {
		_ = src.Close()
		return src, dst, err
	}
	return src, dst, nil
}

func (s *service) Move(ctx context.Context, container string, opts MoveOptions) (*Result, error) {
	src, dst, err := s.pair(opts.To)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	defer dst.Close()
	return move(ctx, src, dst, container, opts)
}

func (s *service) Check(ctx context.Context, container string, opts CheckOptions) (*Report, error) {
	src, dst, err := s.pair(opts.To)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	defer dst.Close()
	return checkMove(ctx, src, dst, container, opts, nil)
}

func (s *service) Status(ctx context.Context, opts StatusOptions) ([]VolumeStatus, error) {
	e, err := s.open("")
	if err != nil {
		return nil, err
	}
	defer e.Close()
	return statuses(ctx, e.API, opts.Containers)
}

func (s *service) Ls(ctx context.Context, opts LsOptions) ([]ContainerRow, error) {
	names, err := s.contexts.Names()
	if err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultLsTimeout
	}
	return listHosts(ctx, names, s.contexts.Current(), s.open, opts.Timeout), nil
}

func (s *service) Failover(ctx context.Context, container string, opts FailoverOptions) (*FailoverResult, error) {
	e, err := s.open("")
	if err != nil {
		return nil, err
	}
	defer e.Close()
	return failover(ctx, e, s.open, container, opts)
}

func (s *service) Rollback(ctx context.Context, container string, opts RollbackOptions) (*RollbackResult, error) {
	e, err := s.open("")
	if err != nil {
		return nil, err
	}
	defer e.Close()
	return rollback(ctx, e, s.open, container, opts)
}

func (s *service) Interrupted(ctx context.Context) ([]InterruptedMove, error) {
	e, err := s.open("")
	if err != nil {
		return nil, err
	}
	defer e.Close()
	return interrupted(ctx, e.API)
}

// drainEngines opens the source and the targets of a drain; a target
// that cannot be opened is left out of targets with its error in
// unreachable. The caller closes what closeAll holds.
func (s *service) drainEngines(opts DrainOptions) (src Engine, dsts []Engine, closeAll func(), err error) {
	to, err := drainTargets(opts)
	if err != nil {
		return src, nil, nil, err
	}
	if src, err = s.open(opts.Source); err != nil {
		return src, nil, nil, err
	}
	for _, name := range to {
		d, err := s.open(name)
		if err != nil {
			_ = src.Close()
			for _, d := range dsts {
				_ = d.Close()
			}
			return src, nil, nil, err
		}
		dsts = append(dsts, d)
	}
	return src, dsts, func() {
		_ = src.Close()
		for _, d := range dsts {
			_ = d.Close()
		}
	}, nil
}

func (s *service) PlanDrain(ctx context.Context, opts DrainOptions) (*DrainPlan, error) {
	src, dsts, closeAll, err := s.drainEngines(opts)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	return planDrain(ctx, src, dsts, opts)
}

func (s *service) Drain(ctx context.Context, plan *DrainPlan, opts DrainOptions) ([]DrainResult, error) {
	opts.Source = plan.Source
	opts.To = nil
	for _, t := range plan.Targets {
		opts.To = append(opts.To, t.Context)
	}
	src, dsts, closeAll, err := s.drainEngines(opts)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	byName := map[string]Engine{}
	for _, d := range dsts {
		byName[d.Context] = d
	}
	return runDrain(ctx, src, byName, plan, opts), nil
}
