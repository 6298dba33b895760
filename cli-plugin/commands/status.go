package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/command/formatter"
	"github.com/docker/cli/cli/streams"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

type statusOptions struct {
	format string
	watch  bool
}

func newStatusCmd(dockerCli command.Cli) *cobra.Command {
	var opts statusOptions
	cmd := &cobra.Command{
		Use:   "status [CONTAINER...]",
		Short: "Show the copy of moved containers' volumes on the current context",
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.watch {
				return runStatusWatch(cmd.Context(), dockerCli, args, opts.format)
			}
			rows, err := migrate.Statuses(cmd.Context(), dockerCli.Client(), args)
			if err != nil {
				return err
			}
			return printStatuses(dockerCli.Out(), rows, opts.format)
		},
	}
	flags := cmd.Flags()
	flags.StringVarP(&opts.format, "format", "f", "", "Format output: 'table', 'json', or a Go template applied to each row")
	flags.BoolVarP(&opts.watch, "watch", "w", false, "Show the copy's progress live until every volume is complete")
	return cmd
}

func printStatuses(w io.Writer, rows []migrate.VolumeStatus, format string) error {
	return printStatusesAt(w, rows, format, time.Now())
}

// printStatusesAt renders as of now, in now's location, so that tests
// render the same anywhere at any time.
func printStatusesAt(w io.Writer, rows []migrate.VolumeStatus, format string, now time.Time) error {
	if done, err := printRows(w, rows, format); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tVOLUME\tSOURCE\tSTATE\tFILES\tBYTES\tRATE\tETA\tSTARTED\tUPDATED\tCOMPLETED")
	for _, r := range rows {
		state := r.State
		if r.Error != "" {
			state += ": " + r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s/%s\t%s/s\t%s\t%s\t%s\t%s\n", r.Container, r.Volume, r.Source, state,
			r.FilesCopied, r.FilesTotal, units.BytesSize(float64(r.BytesCopied)), units.BytesSize(float64(r.BytesTotal)),
			units.BytesSize(float64(r.Rate)), r.ETA, clock(r.StartedAt, now), clock(r.UpdatedAt, now), clock(r.CompletedAt, now))
	}
	return tw.Flush()
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
func runStatusWatch(ctx context.Context, dockerCli command.Cli, names []string, format string) error {
	switch format {
	case "", formatter.TableFormatKey:
	case formatter.JSONFormatKey:
		return errors.New("--watch draws live progress and cannot print json: use --format json without --watch, and poll")
	default:
		return errors.New("--watch draws live progress and cannot apply a --format template: use --format without --watch, and poll")
	}
	// Ctrl-C only stops watching; the copies go on.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := dockerCli.Out()
	var w watcher = &plainWatch{w: out, last: map[string]string{}}
	if out.IsTerminal() {
		w = &ttyWatch{out: out}
	}
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		rows, err := migrate.Statuses(ctx, dockerCli.Client(), names)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the copy's progress: %w", err)
		}
		if !copying(rows) {
			w.end()
			if err := printStatuses(out, rows, ""); err != nil {
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

// copying reports whether any volume's copy is still under way. Other
// states (complete, failed) are final.
func copying(rows []migrate.VolumeStatus) bool {
	for _, r := range rows {
		if r.State == "copying" || r.State == "stalled" {
			return true
		}
	}
	return false
}

// failures is the error of the volumes whose copy failed, if any.
func failures(rows []migrate.VolumeStatus) error {
	var failed []string
	for _, r := range rows {
		if r.State == "failed" {
			failed = append(failed, fmt.Sprintf("volume %s of %s: %s", r.Volume, r.Container, r.Error))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("the copy failed for %s", strings.Join(failed, "; "))
}

// watcher shows each poll of --watch.
type watcher interface {
	draw(rows []migrate.VolumeStatus)
	// end makes way for the final table.
	end()
}

// ttyWatch redraws a frame of progress bars in place.
type ttyWatch struct {
	out   *streams.Out
	lines int
}

func (t *ttyWatch) draw(rows []migrate.VolumeStatus) {
	_, width := t.out.GetTtySize()
	frame := renderProgress(rows, int(width))
	fmt.Fprint(t.out, redraw(t.lines, frame))
	t.lines = strings.Count(frame, "\n")
}

func (t *ttyWatch) end() {
	fmt.Fprint(t.out, redraw(t.lines, ""))
	t.lines = 0
}

// redraw moves the cursor up over the previous frame of lines, clears
// from there down and writes frame: one write, so the terminal never
// shows a half-cleared frame.
func redraw(lines int, frame string) string {
	if lines == 0 {
		return frame
	}
	return fmt.Sprintf("\x1b[%dA\r\x1b[J%s", lines, frame)
}

// renderProgress is one frame of --watch on a terminal of width
// columns: a line per volume with a progress bar, bytes, rate and ETA.
// Lines are cut to width, as a wrapped line would throw redraw's count
// off.
func renderProgress(rows []migrate.VolumeStatus, width int) string {
	if width <= 0 {
		width = 80
	}
	type cols struct{ name, pct, bytes, rate, eta, state string }
	var cs []cols
	var nameW, bytesW, rateW, etaW, stateW int
	for _, r := range rows {
		c := cols{
			name:  r.Container + "/" + r.Volume,
			pct:   fmt.Sprintf("%3d%%", watchPercent(r)),
			bytes: units.BytesSize(float64(r.BytesCopied)) + "/" + units.BytesSize(float64(r.BytesTotal)),
			rate:  units.BytesSize(float64(r.Rate)) + "/s",
			eta:   "ETA " + r.ETA,
		}
		if r.State != "copying" {
			c.state = r.State
			if r.Error != "" {
				c.state += ": " + r.Error
			}
		}
		nameW, bytesW = max(nameW, len(c.name)), max(bytesW, len(c.bytes))
		rateW, etaW = max(rateW, len(c.rate)), max(etaW, len(c.eta))
		if c.state != "" {
			stateW = max(stateW, len(c.state)+2)
		}
		cs = append(cs, c)
	}
	// The bar takes what the other columns leave, within reason.
	const gaps = 2 * 5
	barW := min(max(width-nameW-len("[]")-len("100%")-bytesW-rateW-etaW-stateW-gaps, 10), 40)
	var b strings.Builder
	for i, c := range cs {
		line := fmt.Sprintf("%-*s  %s  %s  %*s  %*s  %-*s", nameW, c.name, bar(watchPercent(rows[i]), barW), c.pct,
			bytesW, c.bytes, rateW, c.rate, etaW, c.eta)
		if c.state != "" {
			line += "  " + c.state
		}
		b.WriteString(strings.TrimRight(cut(line, width), " "))
		b.WriteByte('\n')
	}
	return b.String()
}

// watchPercent is the share of bytes copied; 100 only once complete.
func watchPercent(r migrate.VolumeStatus) int {
	switch {
	case r.State == "complete":
		return 100
	case r.BytesTotal <= 0:
		return 0
	}
	return int(min(r.BytesCopied*100/r.BytesTotal, 99))
}

// bar draws pct as [=====>    ] with width cells inside the brackets.
func bar(pct, width int) string {
	full := pct * width / 100
	if full >= width {
		return "[" + strings.Repeat("=", width) + "]"
	}
	return "[" + strings.Repeat("=", full) + ">" + strings.Repeat(" ", width-full-1) + "]"
}

// cut shortens s to width runes.
func cut(s string, width int) string {
	if r := []rune(s); len(r) > width {
		return string(r[:width])
	}
	return s
}

// plainWatch prints a line for a volume each time its percentage or
// state changes, for logs and pipes: no escape codes, nothing redrawn.
type plainWatch struct {
	w    io.Writer
	last map[string]string
}

func (p *plainWatch) draw(rows []migrate.VolumeStatus) {
	fmt.Fprint(p.w, p.lines(rows))
}

func (p *plainWatch) end() {
	if len(p.last) > 0 {
		fmt.Fprintln(p.w)
	}
}

// lines are the lines of the rows that changed since the last call.
func (p *plainWatch) lines(rows []migrate.VolumeStatus) string {
	var b strings.Builder
	for _, r := range rows {
		key := r.Container + "/" + r.Volume
		line := plainLine(r)
		if seen := fmt.Sprintf("%d %s", watchPercent(r), r.State); p.last[key] != seen {
			p.last[key] = seen
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// plainLine is one volume's progress as a line of text.
func plainLine(r migrate.VolumeStatus) string {
	state := r.State
	if r.Error != "" {
		state += ": " + r.Error
	}
	return fmt.Sprintf("%s/%s  %d%%  %s/%s  %s/s  ETA %s  %s", r.Container, r.Volume, watchPercent(r),
		units.BytesSize(float64(r.BytesCopied)), units.BytesSize(float64(r.BytesTotal)), units.BytesSize(float64(r.Rate)), r.ETA, state)
}
