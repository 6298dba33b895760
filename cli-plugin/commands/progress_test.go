package commands

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

func TestResolveProgress(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		isTTY bool
		want  string
		err   string
	}{
		{mode: "", isTTY: true, want: "tty"},
		{mode: "", isTTY: false, want: "plain"},
		{mode: "auto", isTTY: true, want: "tty"},
		{mode: "auto", isTTY: false, want: "plain"},
		{mode: "plain", isTTY: true, want: "plain"},
		{mode: "tty", isTTY: false, want: "tty"},
		{mode: "quiet", want: "quiet"},
		{mode: "json", isTTY: true, want: "json"},
		{mode: "x", err: `invalid --progress "x": use auto, plain, tty, quiet or json`},
		{mode: "TTY", err: `invalid --progress "TTY": use auto, plain, tty, quiet or json`},
	} {
		t.Run(fmt.Sprintf("%s/%v", tc.mode, tc.isTTY), func(t *testing.T) {
			got, err := resolveProgress(tc.mode, tc.isTTY)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("resolveProgress error = %v, want %s", err, tc.err)
				}
				if _, err := newProgress(tc.mode, &bytes.Buffer{}, tc.isTTY); err == nil || err.Error() != tc.err {
					t.Fatalf("newProgress error = %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("resolveProgress = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// fakeClock is a time the test moves on.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newTestProgress is newProgress on clock's time.
func newTestProgress(t *testing.T, mode string, out *bytes.Buffer, clock *fakeClock) progressPrinter {
	t.Helper()
	p, err := newProgress(mode, out, false)
	if err != nil {
		t.Fatal(err)
	}
	lp := p.(*lockedPrinter)
	// Under the lock: a tty's redraw goroutine may be reading it.
	lp.mu.Lock()
	lp.now = clock.now
	lp.mu.Unlock()
	t.Cleanup(p.Close)
	return p
}

// playMove plays a move that stops in its "stop" phase, with a notice and
// a hook's output along the way.
func playMove(p progressPrinter, clock *fakeClock) {
	p.PhaseStarted("check")
	clock.advance(1234567 * time.Nanosecond)
	p.PhaseDone(migrate.Phase{Name: "check", Duration: 1234567 * time.Nanosecond})
	p.PhaseStarted("image")
	clock.advance(250 * time.Millisecond)
	p.Notice("warning: slow link")
	fmt.Fprint(p, "hook says\nand no newline")
	p.PhaseDone(migrate.Phase{Name: "image", Duration: 1500 * time.Millisecond, Detail: "copied nginx:1 from left"})
	p.PhaseStarted("stop")
	clock.advance(2 * time.Second)
	p.Close()
}

func TestPlainProgress(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: t0}
	playMove(newTestProgress(t, "plain", &out, clock), clock)
	want := "check        1ms  \n" +
		"warning: slow link\n" +
		"hook says\n" +
		"and no newline\n" +
		"image       1.5s  copied nginx:1 from left\n"
	if got := out.String(); got != want {
		t.Errorf("plain progress:\n%q\nwant\n%q", got, want)
	}
}

func TestQuietProgress(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: t0}
	playMove(newTestProgress(t, "quiet", &out, clock), clock)
	// Notices are warnings, not progress: they still print.
	want := "warning: slow link\nhook says\nand no newline\n"
	if got := out.String(); got != want {
		t.Errorf("quiet progress:\n%q\nwant\n%q", got, want)
	}
}

func TestJSONProgress(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: t0}
	playMove(newTestProgress(t, "json", &out, clock), clock)
	want := `{"event":"start","phase":"check","time":"2026-03-01T12:00:00Z"}
{"event":"done","phase":"check","time":"2026-03-01T12:00:00.001234567Z","duration_ns":1234567}
{"event":"start","phase":"image","time":"2026-03-01T12:00:00.001234567Z"}
{"event":"notice","time":"2026-03-01T12:00:00.251234567Z","message":"warning: slow link"}
{"event":"notice","time":"2026-03-01T12:00:00.251234567Z","message":"hook says"}
{"event":"notice","time":"2026-03-01T12:00:00.251234567Z","message":"and no newline"}
{"event":"done","phase":"image","time":"2026-03-01T12:00:00.251234567Z","duration_ns":1500000000,"detail":"copied nginx:1 from left"}
{"event":"start","phase":"stop","time":"2026-03-01T12:00:00.251234567Z"}
`
	if got := out.String(); got != want {
		t.Errorf("json progress:\n%s\nwant\n%s", got, want)
	}
}

func TestTTYFrame(t *testing.T) {
	for _, tc := range []struct {
		name   string
		phases []ttyPhase
		now    time.Time
		want   []string
	}{
		{name: "none", want: []string{}},
		{name: "running", phases: []ttyPhase{{name: "image", start: t0}}, now: t0.Add(1234 * time.Millisecond),
			want: []string{"⠹ image       1.2s"}},
		{name: "running, clock behind", phases: []ttyPhase{{name: "image", start: t0}}, now: t0.Add(-time.Second),
			want: []string{"⠋ image       0.0s"}},
		{name: "done and running", now: t0.Add(3 * time.Second), phases: []ttyPhase{
			{name: "check", start: t0, done: true, duration: 12345 * time.Microsecond},
			{name: "image", start: t0, done: true, duration: 2 * time.Second, detail: "present on right"},
			{name: "volumes", start: t0.Add(2 * time.Second)},
		}, want: []string{
			"✔ check       12ms",
			"✔ image         2s  present on right",
			"⠋ volumes     1.0s",
		}},
		{name: "failed", phases: []ttyPhase{{name: "create", start: t0, failed: true, duration: 80 * time.Millisecond}},
			now: t0.Add(time.Hour), want: []string{"✘ create      80ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ttyFrame(tc.phases, tc.now)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("ttyFrame =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestTTYProgress(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: t0}
	p := newTestProgress(t, "tty", &out, clock)
	playMove(p, clock)
	got := out.String()
	// The notices print once each, above the display.
	for _, n := range []string{"warning: slow link", "hook says", "and no newline"} {
		if c := strings.Count(got, ttyClearLine+n+"\n"); c != 1 {
			t.Errorf("notice %q printed %d times in %q", n, c, got)
		}
	}
	// The last frame is final: the stop, never done, failed.
	final := ttyClearLine + "✔ check        1ms\n" +
		ttyClearLine + "✔ image       1.5s  copied nginx:1 from left\n" +
		ttyClearLine + "✘ stop          2s\n"
	if !strings.HasSuffix(got, fmt.Sprintf(ttyCursorUp, 3)+final) {
		t.Errorf("tty output does not end with the final frame\n%q\ngot\n%q", final, got)
	}
	// Closed, it prints no more frames; a notice goes below the last one.
	out.Reset()
	p.Close()
	p.Notice("rolled back")
	if got, want := out.String(), ttyClearDown+ttyClearLine+"rolled back\n"; got != want {
		t.Errorf("after Close: %q, want %q", got, want)
	}
}

// TestProgressConcurrent is for -race: the move reports from its own
// goroutine while the display redraws.
func TestProgressConcurrent(t *testing.T) {
	for _, mode := range []string{"plain", "tty", "json", "quiet"} {
		t.Run(mode, func(t *testing.T) {
			var out bytes.Buffer
			p, err := newProgress(mode, &out, false)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for _, name := range []string{"check", "image", "stop", "layer", "volumes", "create", "start"} {
				wg.Go(func() {
					p.PhaseStarted(name)
					fmt.Fprintln(p, name, "output")
					p.PhaseDone(migrate.Phase{Name: name, Duration: time.Millisecond})
				})
			}
			wg.Wait()
			p.Close()
			p.Close()
			if mode != "quiet" && !strings.Contains(out.String(), "volumes") {
				t.Errorf("%s output lacks a phase: %q", mode, out.String())
			}
		})
	}
}
