package migrate

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunHook(t *testing.T) {
	// The parent's environment reaches the hook.
	t.Setenv("CARGO_TEST_PARENT", "inherited")
	env := HookEnv{Container: "web", ContainerID: "abc123", Source: "left", Target: "right", Error: "create: no space left"}
	vars := `echo "$CARGO_HOOK|$CARGO_CONTAINER|$CARGO_CONTAINER_ID|$CARGO_SOURCE|$CARGO_TARGET|${CARGO_ERROR-unset}|$CARGO_TEST_PARENT"`
	for _, tc := range []struct {
		name, which, command string
		out                  string // what the hook prints
		err                  string // "" when it succeeds
	}{
		{name: "empty", which: HookPreRestore, command: ""},
		{name: "environment", which: HookPreRestore, command: vars,
			out: "pre-restore|web|abc123|left|right|unset|inherited\n"},
		{name: "error for failed-restore", which: HookFailedRestore, command: vars,
			out: "failed-restore|web|abc123|left|right|create: no space left|inherited\n"},
		{name: "stderr too", which: HookPostRestore, command: "echo out; echo err >&2", out: "out\nerr\n"},
		{name: "exit status", which: HookPreRestore, command: "echo nope; exit 3", out: "nope\n",
			err: `hook pre-restore ("echo nope; exit 3") failed: exit status 3`},
		{name: "no such command", which: HookPostRestore, command: "cargo-no-such-command",
			out: "cargo-no-such-command: not found", err: `hook post-restore ("cargo-no-such-command") failed: exit status 127`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runHook(context.Background(), tc.which, tc.command, env, &out)
			if tc.err == "" && err != nil {
				t.Fatalf("runHook: %v", err)
			}
			if tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Fatalf("runHook error = %v, want %s", err, tc.err)
			}
			var exit *exec.ExitError
			if tc.err != "" && !errors.As(err, &exit) {
				t.Errorf("runHook error %v does not wrap the *exec.ExitError", err)
			}
			// Shells word "not found" differently: only look for it.
			got := out.String()
			notFound := strings.HasSuffix(tc.out, "not found") && strings.Contains(got, "not found")
			if got != tc.out && !notFound {
				t.Errorf("hook output = %q, want %q", got, tc.out)
			}
		})
	}
}

// signalWriter closes seen once what is written contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
		w.seen = nil
	}
	return n, err
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestRunHookCancel(t *testing.T) {
	// The sleep runs in the background, started before the echo, so killing
	// the shell alone would leave it holding the output open.
	seen := make(chan struct{})
	out := &signalWriter{want: "started\n", seen: seen}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runHook(ctx, HookPreRestore, "sleep 30 & echo started; wait; echo late", HookEnv{}, out)
	}()
	select {
	case <-seen:
	case err := <-done:
		t.Fatalf("hook ended before it was cancelled: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("hook did not start")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "hook pre-restore") {
			t.Errorf("runHook error = %v, want the hook named and context.Canceled", err)
		}
		// Past hookWaitDelay the sleep survived and only the wait gave up.
		if d := time.Since(start); d >= hookWaitDelay {
			t.Errorf("runHook returned %s after the cancel: the sleep was not killed", d)
		}
	case <-time.After(2 * hookWaitDelay):
		t.Fatal("runHook did not return after the cancel")
	}
	if got := out.String(); got != "started\n" {
		t.Errorf("hook output = %q, want only %q", got, "started\n")
	}
}
