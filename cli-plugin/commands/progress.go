package commands

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

// progressPrinter shows a move's phases as --progress asks.
type progressPrinter interface {
	migrate.Progress
	// Notice prints msg, a warning say, on lines of its own; a live
	// display stays below it.
	Notice(msg string)
	// Write takes output from elsewhere, a hook's, and prints each of its
	// lines as a notice.
	io.Writer
	// Close stops the redraw of a live display, leaving it final. Call it
	// before printing anything else to the same output.
	Close()
}

// The --progress modes.
const (
	progressAuto  = "auto"
	progressPlain = "plain"
	progressTTY   = "tty"
	progressQuiet = "quiet"
	progressJSON  = "json"
)

// resolveProgress checks mode and settles auto: tty on a terminal, else
// plain.
func resolveProgress(mode string, isTTY bool) (string, error) {
	switch mode {
	case "", progressAuto:
		if isTTY {
			return progressTTY, nil
		}
		return progressPlain, nil
	case progressPlain, progressTTY, progressQuiet, progressJSON:
		return mode, nil
	}
	return "", fmt.Errorf("invalid --progress %q: use auto, plain, tty, quiet or json", mode)
}

// newProgress returns the printer of mode writing to out. isTTY tells
// whether out is a terminal, for auto.
func newProgress(mode string, out io.Writer, isTTY bool) (progressPrinter, error) {
	mode, err := resolveProgress(mode, isTTY)
	if err != nil {
		return nil, err
	}
	p := &lockedPrinter{now: time.Now}
	switch mode {
	case progressPlain:
		p.d = &plainDisplay{w: out}
	case progressQuiet:
		p.d = &quietDisplay{w: out}
	case progressJSON:
		p.d = &jsonDisplay{enc: json.NewEncoder(out)}
	case progressTTY:
		t := &ttyDisplay{w: out}
		// Lines wider than the terminal wrap and would throw the
		// cursor-up count off.
		if s, ok := out.(interface{ GetTtySize() (uint, uint) }); ok {
			if _, width := s.GetTtySize(); width > 1 {
				t.width = int(width) - 1
			}
		}
		p.d = t
		p.startTicker(ttyRedraw)
	}
	return p, nil
}

// phaseDisplay is one mode's rendering. lockedPrinter serializes the calls.
type phaseDisplay interface {
	started(name string, now time.Time)
	done(ph migrate.Phase, now time.Time)
	notice(lines []string, now time.Time)
	tick(now time.Time)
	close(now time.Time)
}

// lockedPrinter makes a phaseDisplay safe to call from any goroutine and
// turns what is written to it into notices.
type lockedPrinter struct {
	mu      sync.Mutex
	d       phaseDisplay
	now     func() time.Time
	partial []byte // written, not yet ended by a newline
	closed  bool

	stop     chan struct{} // ends the redraw goroutine, if any
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func (p *lockedPrinter) startTicker(every time.Duration) {
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				if !p.closed {
					p.d.tick(p.now())
				}
				p.mu.Unlock()
			}
		}
	}()
}

func (p *lockedPrinter) PhaseStarted(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flushPartial()
	p.d.started(name, p.now())
}

func (p *lockedPrinter) PhaseDone(ph migrate.Phase) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flushPartial()
	p.d.done(ph, p.now())
}

func (p *lockedPrinter) Notice(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flushPartial()
	p.d.notice(strings.Split(strings.TrimSuffix(msg, "\n"), "\n"), p.now())
}

func (p *lockedPrinter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	i := bytes.LastIndexByte(p.partial, '\n')
	if i < 0 {
		return len(b), nil
	}
	lines := strings.Split(string(p.partial[:i]), "\n")
	p.partial = append(p.partial[:0], p.partial[i+1:]...)
	p.d.notice(lines, p.now())
	return len(b), nil
}

// flushPartial prints an unfinished written line before anything else.
func (p *lockedPrinter) flushPartial() {
	if len(p.partial) > 0 {
		p.d.notice([]string{string(p.partial)}, p.now())
		p.partial = p.partial[:0]
	}
}

func (p *lockedPrinter) Close() {
	p.stopOnce.Do(func() {
		if p.stop != nil {
			close(p.stop)
		}
	})
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.flushPartial()
	p.closed = true
	p.d.close(p.now())
}

// plainDisplay prints a line as each phase ends.
type plainDisplay struct{ w io.Writer }

func (plainDisplay) started(string, time.Time) {}

func (d plainDisplay) done(ph migrate.Phase, _ time.Time) {
	fmt.Fprintf(d.w, "%-8s %7s  %s\n", ph.Name, ph.Duration.Round(time.Millisecond), ph.Detail)
}

func (d plainDisplay) notice(lines []string, _ time.Time) {
	for _, l := range lines {
		fmt.Fprintln(d.w, l)
	}
}

func (plainDisplay) tick(time.Time)  {}
func (plainDisplay) close(time.Time) {}

// quietDisplay shows no phase; notices, warnings among them, still print.
type quietDisplay struct{ w io.Writer }

func (quietDisplay) started(string, time.Time)        {}
func (quietDisplay) done(migrate.Phase, time.Time)    {}
func (d quietDisplay) notice(l []string, t time.Time) { plainDisplay(d).notice(l, t) }
func (quietDisplay) tick(time.Time)                   {}
func (quietDisplay) close(time.Time)                  {}

// jsonEvent is a line of --progress json.
type jsonEvent struct {
	Event    string         `json:"event"` // start, done or notice
	Phase    string         `json:"phase,omitempty"`
	Time     time.Time      `json:"time"`
	Duration *time.Duration `json:"duration_ns,omitempty"`
	Detail   string         `json:"detail,omitempty"`
	Message  string         `json:"message,omitempty"`
}

// jsonDisplay prints a JSON object per line per event.
type jsonDisplay struct{ enc *json.Encoder }

func (d jsonDisplay) started(name string, now time.Time) {
	_ = d.enc.Encode(jsonEvent{Event: "start", Phase: name, Time: now})
}

func (d jsonDisplay) done(ph migrate.Phase, now time.Time) {
	_ = d.enc.Encode(jsonEvent{Event: "done", Phase: ph.Name, Time: now, Duration: &ph.Duration, Detail: ph.Detail})
}

func (d jsonDisplay) notice(lines []string, now time.Time) {
	_ = d.enc.Encode(jsonEvent{Event: "notice", Time: now, Message: strings.Join(lines, "\n")})
}

func (jsonDisplay) tick(time.Time)  {}
func (jsonDisplay) close(time.Time) {}

// ttyRedraw is how often a live display redraws, for its clocks.
const ttyRedraw = 100 * time.Millisecond

const (
	ttyCursorUp  = "\r\x1b[%dA" // to the start of the line n lines up: typed ^C moved it
	ttyClearLine = "\x1b[2K"
	ttyClearDown = "\x1b[J" // clear to the end of the screen
)

// ttyPhase is a phase as the live display knows it.
type ttyPhase struct {
	name     string
	start    time.Time
	done     bool
	failed   bool // never done: the move stopped in it
	duration time.Duration
	detail   string
}

// ttyDisplay redraws every phase seen so far, in place.
type ttyDisplay struct {
	w      io.Writer
	width  int // of a line, 0 for no limit
	phases []ttyPhase
	lines  int // of the frame last drawn, for the cursor to go back up
}

func (d *ttyDisplay) started(name string, now time.Time) {
	d.phases = append(d.phases, ttyPhase{name: name, start: now})
	d.draw(nil, now)
}

func (d *ttyDisplay) done(ph migrate.Phase, now time.Time) {
	for i := len(d.phases) - 1; i >= 0; i-- {
		if p := &d.phases[i]; p.name == ph.Name && !p.done {
			p.done, p.duration, p.detail = true, ph.Duration, ph.Detail
			d.draw(nil, now)
			return
		}
	}
	// Done without a start: show it anyway.
	d.phases = append(d.phases, ttyPhase{name: ph.Name, start: now.Add(-ph.Duration), done: true, duration: ph.Duration, detail: ph.Detail})
	d.draw(nil, now)
}

func (d *ttyDisplay) notice(lines []string, now time.Time) { d.draw(lines, now) }

func (d *ttyDisplay) tick(now time.Time) {
	if len(d.phases) > 0 {
		d.draw(nil, now)
	}
}

func (d *ttyDisplay) close(now time.Time) {
	for i := range d.phases {
		if p := &d.phases[i]; !p.done {
			p.failed, p.duration = true, now.Sub(p.start)
		}
	}
	if len(d.phases) > 0 {
		d.draw(nil, now)
	}
	// The frame is final: what comes next goes below it.
	d.phases, d.lines = nil, 0
}

// draw prints notices above the display, then the frame over the last one,
// in a single write so the terminal does not flicker.
func (d *ttyDisplay) draw(notices []string, now time.Time) {
	var b strings.Builder
	if d.lines > 0 {
		fmt.Fprintf(&b, ttyCursorUp, d.lines)
	}
	if len(notices) > 0 {
		// A notice may wrap: clear all of the old frame below it.
		b.WriteString(ttyClearDown)
		for _, n := range notices {
			b.WriteString(ttyClearLine + n + "\n")
		}
	}
	frame := ttyFrame(d.phases, now)
	for _, l := range frame {
		b.WriteString(ttyClearLine + ttyTruncate(l, d.width) + "\n")
	}
	d.lines = len(frame)
	_, _ = io.WriteString(d.w, b.String())
}

var ttySpinner = []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")

// ttyFrame renders phases at now, a line each: a ttySpinner and the time so
// far for the running one, ✔ or ✘, the duration and the detail for the
// others.
func ttyFrame(phases []ttyPhase, now time.Time) []string {
	lines := make([]string, 0, len(phases))
	for _, p := range phases {
		switch {
		case p.done:
			lines = append(lines, strings.TrimRight(fmt.Sprintf("✔ %-8s %7s  %s", p.name, p.duration.Round(time.Millisecond), p.detail), " "))
		case p.failed:
			lines = append(lines, fmt.Sprintf("✘ %-8s %7s", p.name, p.duration.Round(time.Millisecond)))
		default:
			el := max(now.Sub(p.start), 0)
			s := ttySpinner[int(el/ttyRedraw)%len(ttySpinner)]
			lines = append(lines, fmt.Sprintf("%c %-8s %6.1fs", s, p.name, el.Seconds()))
		}
	}
	return lines
}

// ttyTruncate cuts s to width runes; 0 is no limit.
func ttyTruncate(s string, width int) string {
	if width <= 0 {
		return s
	}
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return string(r[:width-1]) + "…"
}
