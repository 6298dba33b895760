package commands

import (
	"fmt"
	"io"
	"strings"

	"github.com/docker/cli/cli/streams"
	"github.com/docker/go-units"

	"github.com/cargo-migrate/cargo/internal/migrate"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// watcher shows each poll of a copy's progress: status --watch's and
// failover --wait's.
type watcher interface {
	draw(rows []migrate.VolumeStatus)
	// end makes way for what is printed next.
	end()
}

// newWatcher redraws in place on a terminal, else prints a line per
// change.
func newWatcher(out *streams.Out) watcher {
	if out.IsTerminal() {
		return &ttyWatch{out: out}
	}
	return &plainWatch{w: out, last: map[string]string{}}
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
		if r.State != volstatus.StateCopying {
			c.state = stateText(r)
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
	case r.State == volstatus.StateComplete:
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
	return fmt.Sprintf("%s/%s  %d%%  %s/%s  %s/s  ETA %s  %s", r.Container, r.Volume, watchPercent(r),
		units.BytesSize(float64(r.BytesCopied)), units.BytesSize(float64(r.BytesTotal)), units.BytesSize(float64(r.Rate)), r.ETA, stateText(r))
}
