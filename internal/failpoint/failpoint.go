// Package failpoint names the steps of the code where a test can make it
// fail, pause or kill the process: the points a crash test stops at.
//
// A point is a call to Inject with a name, "package.step" (for instance
// "replica.after-rename"). Release builds compile every point out: Inject
// is an empty function. Builds with the tag "failpoints" (make test's)
// read what each point does from the environment variable
// CARGO_FAILPOINTS and from the file named by CARGO_FAILPOINTS_FILE (or
// given to UseFile),
// re-read whenever it changes, so a test can arm a point in a process that
// is already running:
//
//	replica.after-rename=kill;migrate.after-create=error
//
// Each entry is NAME=[COUNT*]ACTION, entries separated by ';' or newlines:
//
//	off           nothing
//	error[(MSG)]  Inject returns an error
//	panic         the goroutine panics
//	kill          the process SIGKILLs itself, as a crash
//	sleep(DUR)    Inject waits DUR (a Go duration), then returns nil
//	pause         Inject waits until the point is set to something else
//	COUNT*ACTION  the action the first COUNT times only, then off
//
// Unit tests set points in-process with Set and SetFunc.
package failpoint

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Env and FileEnv are the environment variables a failpoints build reads.
const (
	Env     = "CARGO_FAILPOINTS"
	FileEnv = "CARGO_FAILPOINTS_FILE"
)

// ErrInjected is what an "error" point's error wraps.
var ErrInjected = errors.New("failure injected")

type kind int

const (
	kindOff kind = iota
	kindError
	kindPanic
	kindKill
	kindSleep
	kindPause
)

type action struct {
	kind  kind
	msg   string
	sleep time.Duration
	count int // 0: every time
}

// parse reads "a=error;b=2*kill" into actions by point name.
func parse(spec string) (map[string]action, error) {
	out := map[string]action{}
	for _, e := range strings.FieldsFunc(spec, func(r rune) bool { return r == ';' || r == '\n' }) {
		e = strings.TrimSpace(e)
		if e == "" || strings.HasPrefix(e, "#") {
			continue
		}
		name, val, ok := strings.Cut(e, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("failpoint %q: want NAME=ACTION", e)
		}
		a, err := parseAction(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("failpoint %s: %w", name, err)
		}
		out[strings.TrimSpace(name)] = a
	}
	return out, nil
}

func parseAction(s string) (action, error) {
	var a action
	if n, rest, ok := strings.Cut(s, "*"); ok {
		c, err := strconv.Atoi(n)
		if err != nil || c < 1 {
			return a, fmt.Errorf("count %q: want a positive number", n)
		}
		a.count, s = c, rest
	}
	verb, arg := s, ""
	if i := strings.IndexByte(s, '('); i >= 0 && strings.HasSuffix(s, ")") {
		verb, arg = s[:i], s[i+1:len(s)-1]
	}
	switch verb {
	case "off":
		a.kind = kindOff
	case "error":
		a.kind, a.msg = kindError, arg
	case "panic":
		a.kind = kindPanic
	case "kill":
		a.kind = kindKill
	case "pause":
		a.kind = kindPause
	case "sleep":
		d, err := time.ParseDuration(arg)
		if err != nil {
			return a, fmt.Errorf("sleep(%s): %w", arg, err)
		}
		a.kind, a.sleep = kindSleep, d
	default:
		return a, fmt.Errorf("unknown action %q: want off, error, panic, kill, sleep(DUR) or pause", s)
	}
	return a, nil
}

func (a action) err(name string) error {
	if a.msg != "" {
		return fmt.Errorf("%w at %s: %s", ErrInjected, name, a.msg)
	}
	return fmt.Errorf("%w at %s", ErrInjected, name)
}
