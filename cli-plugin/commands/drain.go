package commands

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

type drainOptions struct {
	to             []string
	parallel       int
	dryRun         bool
	live           bool
	skipBindMounts bool
	force          bool
	format         string
	progress       string
}

func newDrainCommand(dockerCli command.Cli, svc migrate.Service) *cobra.Command {
	var opts drainOptions
	cmd := &cobra.Command{
		Use: "drain SOURCE_CONTEXT --to TARGET[,TARGET...]",
		Example: `  # What would moving every container of host1 to host2 and host3 do? Nothing changes
  docker migrate drain host1 --to host2,host3 --dry-run

  # Empty host1, three moves at once
  docker migrate drain host1 --to host2,host3 --parallel 3

  # The running containers with their processes; the plan and the summary as JSON lines
  docker migrate drain host1 --to host2 --live --format json`,
		Short: "Move every container of a Docker context to other contexts",
		Long: `Move every container of a Docker context, running or stopped, to other
contexts. Every container is checked first and the plan shown: which target
each goes to (by free memory and disk; containers sharing a network stay
together), and what stands in the way of those that cannot move. Then the
moves run, a few at once; a failed move is rolled back as any move is, the
others go on and are not undone. The summary has a row per container; the
exit status is non-zero if any did not move.`,
		Args: cli.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDrain(cmd.Context(), dockerCli, svc, args[0], opts)
		},
	}
	flags := cmd.Flags()
	flags.StringSliceVar(&opts.to, "to", nil, "Docker contexts to move the containers to, comma separated (required)")
	flags.IntVar(&opts.parallel, "parallel", migrate.DefaultDrainParallel, "How many moves run at once")
	flags.BoolVar(&opts.dryRun, "dry-run", false, "Check every container and show the plan, changing nothing")
	flags.BoolVar(&opts.live, "live", false, "Move the running containers' processes too (CRIU); stopped ones move as they are")
	flags.BoolVar(&opts.skipBindMounts, "skip-bind-mounts", false, "Start the containers on their targets without their bind mounts")
	flags.BoolVar(&opts.force, "force", false, "Go on past the checks that can safely be skipped (free ports and disk, local volumes shared)")
	flags.StringVarP(&opts.format, "format", "f", "", "Format the plan and the summary: 'table', 'json' (an object per line), or a Go template applied to each")
	flags.StringVar(&opts.progress, "progress", "auto", "Set type of progress output: 'auto', 'plain' (a line per phase of each move) or 'quiet'")
	cmd.ValidArgsFunction = completeContexts(dockerCli, false)
	_ = cmd.RegisterFlagCompletionFunc("to", completeContexts(dockerCli, true))
	return cmd
}

func runDrain(ctx context.Context, dockerCli command.Cli, svc migrate.Service, source string, opts drainOptions) error {
	format, err := parseFormat(opts.format)
	if err != nil {
		return err
	}
	if opts.parallel < 1 {
		return fmt.Errorf("--parallel %d: give at least 1", opts.parallel)
	}
	quiet := false
	switch opts.progress {
	case "", progressAuto, progressPlain:
	case progressQuiet:
		quiet = true
	default:
		return fmt.Errorf("invalid --progress %q: use auto, plain or quiet", opts.progress)
	}
	// As a single move: Ctrl-C, a kill or a dropped ssh session stops
	// new moves from starting and rolls the running ones back.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	dopts := migrate.DrainOptions{Source: source, To: opts.to, Parallel: opts.parallel, Live: opts.live,
		SkipBindMounts: opts.skipBindMounts, Force: opts.force}
	plan, err := svc.PlanDrain(ctx, dopts)
	if err != nil {
		return err
	}
	if err := printItems(dockerCli.Out(), format, plan.Moves, func(w io.Writer, _ []migrate.PlannedMove) error {
		return printDrainPlan(w, plan)
	}); err != nil {
		return err
	}
	failed := plan.Failed()
	if opts.dryRun {
		if len(failed) > 0 {
			return fmt.Errorf("%d of %d container(s) of %s cannot move", len(failed), len(plan.Moves), plan.Source)
		}
		return nil
	}
	if len(failed) == len(plan.Moves) {
		if len(failed) == 0 {
			return nil // nothing to move
		}
		return fmt.Errorf("none of the %d container(s) of %s can move: see the plan above", len(failed), plan.Source)
	}
	// Progress shares stdout with the tables; with JSON or a template on
	// stdout it goes to stderr.
	var progressOut io.Writer = dockerCli.Out()
	if !format.isTable() {
		progressOut = dockerCli.Err()
	}
	lines := &lineWriter{w: progressOut}
	if !quiet {
		dopts.Progress = func(container string) migrate.Progress {
			return &drainProgress{container: container, out: lines}
		}
	}
	if format.isTable() {
		fmt.Fprintln(dockerCli.Out())
	}
	results, err := svc.Drain(ctx, plan, dopts)
	if err != nil {
		return err
	}
	if format.isTable() {
		fmt.Fprintln(dockerCli.Out())
	}
	if err := printItems(dockerCli.Out(), format, results, printDrainSummary); err != nil {
		return err
	}
	bad := 0
	for _, r := range results {
		if r.Result != migrate.DrainMoved {
			bad++
		}
	}
	switch {
	case bad == 0:
		return nil
	case bad == len(results):
		return fmt.Errorf("none of the %d container(s) of %s moved: see the summary above", bad, plan.Source)
	}
	return fmt.Errorf("%d of %d container(s) of %s did not move: see the summary above; the others moved and stay moved", bad, len(results), plan.Source)
}

// printDrainPlan is the plan's table: a row per container, and under it
// why those that cannot move cannot.
func printDrainPlan(w io.Writer, p *migrate.DrainPlan) error {
	for _, t := range p.Targets {
		if t.Error != "" {
			fmt.Fprintf(w, "Target %s: %s\n", t.Context, t.Error)
			continue
		}
		fmt.Fprintf(w, "Target %s: %s memory available, %s disk free\n", t.Context, sizeOrUnknown(t.MemAvailableBytes), sizeOrUnknown(t.FreeBytes))
	}
	if len(p.Moves) == 0 {
		fmt.Fprintf(w, "%s has no container to move.\n", p.Source)
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CONTAINER\tSTATE\tTARGET\tWITH\tMEMORY\tDISK\tCHECK")
		for _, m := range p.Moves {
			check := "ok"
			if !m.OK {
				check = "FAILED"
			} else if m.Live {
				check = "ok, live"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Container, m.State, dash(m.Target), dash(strings.Join(m.With, ",")),
				units.BytesSize(float64(m.MemoryBytes)), units.BytesSize(float64(m.DiskBytes)), check)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	var notes []string
	shown := map[int]bool{}
	for _, m := range p.Moves {
		if len(m.Shares) > 0 && !shown[m.Group] {
			shown[m.Group] = true
			notes = append(notes, fmt.Sprintf("%s stay together: they share %s", strings.Join(append([]string{m.Container}, m.With...), ", "), strings.Join(m.Shares, ", ")))
		}
	}
	for _, m := range p.Moves {
		if !m.OK {
			notes = append(notes, m.Container+": "+m.Error)
		}
	}
	if len(p.MovedOut) > 0 {
		notes = append(notes, "left as they are, moved out earlier: "+strings.Join(p.MovedOut, ", "))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	return nil
}

func sizeOrUnknown(n int64) string {
	if n <= 0 {
		return "unknown"
	}
	return units.BytesSize(float64(n))
}

// printDrainSummary is the table of what became of each container.
func printDrainSummary(w io.Writer, results []migrate.DrainResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tTARGET\tRESULT\tDOWNTIME\tERROR")
	for _, r := range results {
		down := "-"
		if r.Result == migrate.DrainMoved && r.Running {
			down = r.Downtime.Round(time.Millisecond).String()
		}
		res := r.Result
		if r.Live {
			res += " live"
		}
		msg := r.Error
		if msg == "" && len(r.Warnings) > 0 {
			msg = "warning: " + strings.Join(r.Warnings, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Container, dash(r.Target), res, down, dash(msg))
	}
	return tw.Flush()
}

// drainProgress prints a line as each phase of one container's move
// ends, the container's name first: several moves share the output.
type drainProgress struct {
	container string
	out       *lineWriter
}

func (p *drainProgress) PhaseStarted(string) {}

func (p *drainProgress) PhaseDone(ph migrate.Phase) {
	p.out.line(fmt.Sprintf("%s: %-8s %7s  %s", p.container, ph.Name, ph.Duration.Round(time.Millisecond), ph.Detail))
}

// lineWriter writes whole lines from several goroutines, never mixed.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.w, strings.TrimRight(s, " "))
}
