package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

type statusOptions struct {
	containers []string
	format     string
	watch      bool
}

func newStatusCommand(dockerCli command.Cli, svc migrate.Service) *cobra.Command {
	var opts statusOptions
	cmd := &cobra.Command{
		Use: "status [CONTAINER...]",
		Example: `  # On the target: how far the copy of each moved container's volumes is
  docker --context host2 migrate status

  # Follow one container's copy until it completes
  docker --context host2 migrate status web --watch`,
		Short: "Show the copy of moved containers' volumes on the current context",
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.containers = args
			return runStatus(cmd.Context(), dockerCli, svc, opts)
		},
	}
	flags := cmd.Flags()
	flags.StringVarP(&opts.format, "format", "f", "", listFormatHelp)
	flags.BoolVarP(&opts.watch, "watch", "w", false, "Show the copy's progress live until every volume is complete")
	cmd.ValidArgsFunction = completeContainers(dockerCli, true)
	return cmd
}

func runStatus(ctx context.Context, dockerCli command.Cli, svc migrate.Service, opts statusOptions) error {
	format, err := parseFormat(opts.format)
	if err != nil {
		return err
	}
	if opts.watch {
		return runStatusWatch(ctx, dockerCli, svc, opts.containers, format)
	}
	rows, err := svc.Status(ctx, migrate.StatusOptions{Containers: opts.containers})
	if err != nil {
		return err
	}
	noteInterrupted(ctx, dockerCli.Err(), svc, opts.containers)
	return printStatuses(dockerCli.Out(), format, rows, time.Now())
}

// noteInterrupted tells, on stderr whatever the format, of the moves from
// this context that did not finish, with the commands that finish or
// undo them.
func noteInterrupted(ctx context.Context, w io.Writer, svc migrate.Service, containers []string) {
	moves, err := svc.Interrupted(ctx)
	if err != nil {
		fmt.Fprintln(w, "warning:", err)
		return
	}
	for _, im := range moves {
		if len(containers) == 0 || slices.Contains(containers, im.Container) {
			fmt.Fprintln(w, "notice:", im)
		}
	}
}

// printStatuses prints rows as of now, in now's location, so that tests
// render the same anywhere at any time.
func printStatuses(w io.Writer, format outputFormat, rows []migrate.VolumeStatus, now time.Time) error {
	return printItems(w, format, rows, func(w io.Writer, rows []migrate.VolumeStatus) error {
		return statusTable(w, rows, now)
	})
}

// statusTable is the table of status: a row per volume.
func statusTable(w io.Writer, rows []migrate.VolumeStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tVOLUME\tSOURCE\tSTATE\tFILES\tBYTES\tRATE\tETA\tSTARTED\tUPDATED\tCOMPLETED")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s/%s\t%s/s\t%s\t%s\t%s\t%s\n", r.Container, r.Volume, r.Source, stateText(r),
			r.FilesCopied, r.FilesTotal, units.BytesSize(float64(r.BytesCopied)), units.BytesSize(float64(r.BytesTotal)),
			units.BytesSize(float64(r.Rate)), r.ETA, clock(r.StartedAt, now), clock(r.UpdatedAt, now), clock(r.CompletedAt, now))
	}
	return tw.Flush()
}

// stateText is a volume's state, with its error if any.
func stateText(r migrate.VolumeStatus) string {
	if r.Error != "" {
		return string(r.State) + ": " + r.Error
	}
	return string(r.State)
}

// clock shows a time of today compactly, an older one with its date.
func clock(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "-"
	case now.Sub(t) < 24*time.Hour:
		return t.In(now.Location()).Format("15:04:05")
	}
	return t.In(now.Location()).Format("2006-01-02 15:04")
}

// watchInterval is how often --watch polls: often enough to look live,
// rarely enough not to load the engine.
const watchInterval = 500 * time.Millisecond

// runStatusWatch is `docker migrate status --watch`: it redraws until
// every volume's copy has ended, then prints the final table.
func runStatusWatch(ctx context.Context, dockerCli command.Cli, svc migrate.Service, names []string, format outputFormat) error {
	switch {
	case format.json:
		return errors.New("--watch draws live progress and cannot print json: use --format json without --watch, and poll")
	case !format.isTable():
		return errors.New("--watch draws live progress and cannot apply a --format template: use --format without --watch, and poll")
	}
	// Ctrl-C only stops watching; the copies go on.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := dockerCli.Out()
	w := newWatcher(out)
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		rows, err := svc.Status(ctx, migrate.StatusOptions{Containers: names})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the copy's progress: %w", err)
		}
		if !copying(rows) {
			w.end()
			if err := printStatuses(out, tableFormat, rows, time.Now()); err != nil {
				return err
			}
			return failures(rows)
		}
		w.draw(rows)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// copying reports whether any volume's copy is still under way.
func copying(rows []migrate.VolumeStatus) bool {
	for _, r := range rows {
		if r.Copying() {
			return true
		}
	}
	return false
}

// failures is the error of the volumes whose copy failed, if any.
func failures(rows []migrate.VolumeStatus) error {
	var failed []string
	for _, r := range rows {
		if r.State == volstatus.StateFailed {
			failed = append(failed, fmt.Sprintf("volume %s of %s: %s", r.Volume, r.Container, r.Error))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("the copy failed for %s", strings.Join(failed, "; "))
}
