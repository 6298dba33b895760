package volume_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/tests/harness"
)

// silentSource accepts connections inside a test host and never says a
// word: a source host whose plugin hangs. A target's TLS handshake with
// it waits.
type silentSource struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// listenSilently opens a silent source on h's address. The listener's
// socket is made inside h's network namespace, from a thread that moves
// there for good (it is never unlocked, so it ends with its goroutine
// rather than serve other goroutines from h's namespace).
func listenSilently(t *testing.T, h *harness.Host) *silentSource {
	t.Helper()
	ns, err := os.Open(filepath.Join("/var/run/netns", env.Prefix+"-"+h.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	type result struct {
		l   net.Listener
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			c <- result{err: fmt.Errorf("entering the network of %s: %w", h.Name, err)}
			return
		}
		l, err := net.Listen("tcp", net.JoinHostPort(h.Addr, "0"))
		c <- result{l, err}
	}()
	r := <-c
	if r.err != nil {
		t.Fatal(r.err)
	}
	s := &silentSource{l: r.l}
	go func() {
		for {
			conn, err := r.l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *silentSource) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// ticket reaches the silent source; its credential and fingerprint are
// well formed and never get checked.
func (s *silentSource) ticket(t *testing.T) string {
	t.Helper()
	token, _, err := peer.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tk := peer.Ticket{Addr: s.l.Addr().String(), ExportID: "silent", Token: token,
		Fingerprint: "sha256:" + strings.Repeat("5a", 32)}
	if err := tk.Validate(); err != nil {
		t.Fatal(err)
	}
	return tk.String()
}

// close makes the source go away: its connections reset, new ones are
// refused.
func (s *silentSource) close() {
	s.l.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// timed runs a docker command on h and returns its output and how long
// it took.
func timed(t *testing.T, h *harness.Host, args ...string) (string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	r := h.Docker(ctx, args...)
	took := time.Since(start)
	if r.Err != nil {
		t.Fatalf("%s: %v", h.Name, r.Err)
	}
	t.Logf("docker %s: %v", strings.Join(args, " "), took.Round(time.Millisecond))
	return r.Stdout, took
}

// promptly runs a docker command on h and fails the test unless it
// succeeds within a second more than it takes when nothing else runs
// (usual: 0 for a command the engine answers from the plugin alone).
func promptly(t *testing.T, usual time.Duration, h *harness.Host, args ...string) string {
	t.Helper()
	out, took := timed(t, h, args...)
	if took > usual+time.Second {
		t.Fatalf("docker %s took %v while a create waited on its source, want at most a second more than its usual %v",
			strings.Join(args, " "), took.Round(time.Millisecond), usual.Round(time.Millisecond))
	}
	return out
}

// While a federated create waits on a source that never answers, the
// plugin still answers everything else on that engine; the create then
// fails once the source is gone, and leaves no volume behind.
func TestLocking(t *testing.T) {
	env.PluginLogOnFailure(t)
	h, src := env.Hosts[0], env.Hosts[1]
	other, fed := name(t, h, "other"), name(t, h, "fed")
	h.MustDocker(t, "volume", "create", "-d", "cargo", other)
	// A container's start takes the engine a while of its own: measured
	// with nothing else running, so only the plugin's delay counts.
	// No network: one thing less for the engine to set up.
	run := []string{"run", "--rm", "--network", "none", "-v", other + ":/d", env.Image, "true"}
	_, usualRun := timed(t, h, run...)

	silent := listenSilently(t, src)
	ticket := silent.ticket(t)
	created := make(chan harness.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		created <- h.Docker(ctx, "volume", "create", "-d", "cargo", "-o", "from="+ticket, fed)
	}()
	harness.Eventually(t, time.Minute, "the create reaches the silent source", func() error {
		select {
		case r := <-created:
			t.Fatalf("the create returned before it reached its source: %v %s", r.Err, r.Stdout)
		default:
		}
		if silent.accepted() == 0 {
			return errors.New("no connection yet")
		}
		return nil
	})

	ls := strings.Fields(promptly(t, 0, h, "volume", "ls", "-q", "--filter", "driver=cargo:latest"))
	if !contains(ls, other) || contains(ls, fed) {
		t.Errorf("volume ls = %v, want %s and not %s (not there until its create returns)", ls, other, fed)
	}
	promptly(t, usualRun, h, run...)
	promptly(t, 0, h, "volume", "inspect", other)
	select {
	case r := <-created:
		t.Fatalf("the create returned while its source stayed silent: %v %s", r.Err, r.Stdout)
	default:
	}

	// The source goes away: the create fails at once, and cleanly.
	silent.close()
	var r harness.Result
	select {
	case r = <-created:
	case <-time.After(2 * time.Minute):
		t.Fatal("the create did not end once its source was gone")
	}
	if r.Err == nil || !strings.Contains(r.Err.Error(), "fetching its tree from the source host") {
		t.Fatalf("create: err = %v, want the fetch from the source failed", r.Err)
	}
	if ls := volumeNames(t, h); contains(ls, fed) {
		t.Errorf("the failed create left volume %s listed: %v", fed, ls)
	}
	if r := h.Docker(harness.Ctx(t), "volume", "inspect", fed); r.Err == nil {
		t.Errorf("volume inspect %s succeeded after its create failed", fed)
	}
	dir := filepath.Join(env.Base, h.Name, "docker", "plugins", "cargo", "volumes", fed)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed create left %s: %v", dir, err)
	}
	// And the name is free again.
	h.MustDocker(t, "volume", "create", "-d", "cargo", fed)
	h.MustDocker(t, "volume", "rm", fed)
}
