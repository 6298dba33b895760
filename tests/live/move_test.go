package live_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/tests/harness"
)

// migrate runs `docker migrate ARGS...` with h's context current.
func migrate(t *testing.T, h *harness.Host, args ...string) harness.Result {
	t.Helper()
	return env.Docker(harness.Ctx(t), append([]string{"--context", h.Context, "migrate"}, args...)...)
}

// liveApp runs on h a counter that keeps its state only in memory and
// appends to a cargo volume holding a blob; it returns the container,
// the volume and the blob's checksum.
func liveApp(t *testing.T, h *harness.Host) (web, vol, sum string) {
	t.Helper()
	web, vol = h.Unique(t, "web"), h.Unique(t, "v")
	h.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	sum = h.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", "head -c 20000000 /dev/urandom > /data/blob; md5sum < /data/blob")
	h.MustDocker(t, "run", "-d", "--name", web, "--network", liveNetwork(t, h), "-v", vol+":/data", env.Image, "sh", "-c",
		strings.Replace(counter, "sleep 0.1", "echo $i >> /data/log; sleep 0.1", 1))
	waitCounting(t, h, web)
	return web, vol, sum
}

// liveNetwork is the network a live-moved container can have on h's
// engine: Engine 28 and later cannot restore one with a network namespace
// of its own (see ownNetnsRefusal), so there it shares the host's.
func liveNetwork(t *testing.T, h *harness.Host) string {
	if ownNetnsRefusal(h.MustDocker(t, "version", "-f", "{{.Server.Version}}")) != "" {
		return "host"
	}
	return "bridge"
}

// waitCounting waits until web's counter runs on h, and returns its state.
func waitCounting(t *testing.T, h *harness.Host, web string) (token string, n int) {
	t.Helper()
	harness.Eventually(t, 30*time.Second, "the counter counting on "+h.Name, func() error {
		var err error
		token, n, err = counterState(h.Docker(harness.Ctx(t), "exec", web, "cat", "/tmp/n").Stdout)
		if err == nil && n < 3 {
			err = fmt.Errorf("at %d", n)
		}
		return err
	})
	return token, n
}

// goesOn asserts that web's counter runs on h with token, past n: the
// process was restored, not started again.
func goesOn(t *testing.T, h *harness.Host, web, token string, n int) int {
	t.Helper()
	var got int
	harness.Eventually(t, 30*time.Second, "the counter going on on "+h.Name, func() error {
		tok, m, err := counterState(h.Docker(harness.Ctx(t), "exec", web, "cat", "/tmp/n").Stdout)
		switch {
		case err != nil:
			return err
		case tok != token:
			t.Fatalf("the counter on %s has token %s, the moved one %s: the process started again", h.Name, tok, token)
		case m <= n:
			return fmt.Errorf("count %d, was %d", m, n)
		}
		got = m
		return nil
	})
	return got
}

// cleanupLive removes what a live move of web with vol leaves on both.
func cleanupLive(t *testing.T, web, vol string) {
	t.Cleanup(func() {
		for _, h := range env.Hosts {
			h.Docker(harness.Ctx(t), "rm", "-f", web)
			h.Docker(harness.Ctx(t), "volume", "rm", "-f", vol, vol+".cargo-export")
		}
	})
}

// A container whose state is only in memory moves live to h2 and back:
// each time its process goes on where it was, its volume reads the same
// at once and copies in the background, and failover frees it of the
// host it left, whose engine can then stop.
func TestLiveMoveRoundTrip(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	env.PluginLogOnFailure(t)
	web, vol, sum := liveApp(t, h1)
	cleanupLive(t, web, vol)

	token, n := waitCounting(t, h1, web)
	r := migrate(t, h1, web, "--to", h2.Context, "--live", "--progress", "plain")
	if r.Err != nil {
		t.Fatalf("live move: %v\n%s", r.Err, r.Combined())
	}
	for _, phase := range []string{"checkpoint", "transfer", "restore"} {
		if !strings.Contains(r.Stdout, phase) {
			t.Errorf("no %s phase shown:\n%s", phase, r.Stdout)
		}
	}
	if !strings.Contains(r.Stdout, "restored from a checkpoint") {
		t.Errorf("result: %s", r.Stdout)
	}
	t.Logf("live move %s -> %s:\n%s", h1.Name, h2.Name, r.Stdout)
	n = goesOn(t, h2, web, token, n)
	if got := h2.MustDocker(t, "exec", web, "md5sum", "/data/blob"); !strings.HasPrefix(got, strings.Fields(sum)[0]) {
		t.Fatalf("the volume on %s: %s, want %s", h2.Name, got, sum)
	}
	if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", web); got != "false" {
		t.Fatalf("%s runs on %s too", web, h1.Name)
	}
	for _, h := range env.Hosts {
		if out := h.MustDocker(t, "volume", "ls", "-q"); strings.Contains(out, ".cargo-checkpoint") {
			t.Errorf("%s keeps the checkpoint's volume: %s", h.Name, out)
		}
	}
	if r := migrate(t, h2, "failover", "--wait", "--remove-source", web); r.Err != nil {
		t.Fatalf("failover: %v\n%s", r.Err, r.Combined())
	}
	n = goesOn(t, h2, web, token, n)
	if out, err := os.ReadDir(filepath.Join(h2.DataRoot(), "containers", h2.MustDocker(t, "inspect", "-f", "{{.Id}}", web), "checkpoints")); err == nil && len(out) > 0 {
		t.Errorf("the target keeps %d checkpoint(s)", len(out))
	}

	// And back, live: the same process again.
	r = migrate(t, h2, web, "--to", h1.Context, "--live")
	if r.Err != nil {
		t.Fatalf("live move back: %v\n%s", r.Err, r.Combined())
	}
	n = goesOn(t, h1, web, token, n)
	if r := migrate(t, h1, "failover", "--wait", "--remove-source", web); r.Err != nil {
		t.Fatalf("failover back: %v\n%s", r.Err, r.Combined())
	}
	h2.StopEngine(t)
	t.Cleanup(func() { h2.StartEngine(t) })
	goesOn(t, h1, web, token, n)
	if got := h1.MustDocker(t, "exec", web, "md5sum", "/data/blob"); !strings.HasPrefix(got, strings.Fields(sum)[0]) {
		t.Fatalf("the volume back on %s: %s, want %s", h1.Name, got, sum)
	}
}

// A live move whose restore fails rolls back: the source's processes go
// on from the checkpoint, the target keeps nothing, the failed-restore
// hook runs.
func TestLiveRestoreFails(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	env.PluginLogOnFailure(t)
	web, vol, _ := liveApp(t, h1)
	cleanupLive(t, web, vol)
	token, n := waitCounting(t, h1, web)
	mark := filepath.Join(t.TempDir(), "failed-restore")
	os.Setenv(failpoint.Env, "migrate.after-transfer=error(restore refused)")
	r := migrate(t, h1, web, "--to", h2.Context, "--live", "--hook-failed-restore", "touch "+mark)
	os.Unsetenv(failpoint.Env)
	if r.Err == nil || !strings.Contains(r.Combined(), "restored from its checkpoint") {
		t.Fatalf("live move: %v\n%s", r.Err, r.Combined())
	}
	goesOn(t, h1, web, token, n)
	if _, err := os.Stat(mark); err != nil {
		t.Errorf("the failed-restore hook did not run: %v", err)
	}
	for _, args := range [][]string{{"inspect", web}, {"volume", "inspect", vol}} {
		if r := h2.Docker(harness.Ctx(t), args...); r.Err == nil {
			t.Errorf("%v exists on %s after the rollback", args, h2.Name)
		}
	}
	if out := h1.MustDocker(t, "checkpoint", "ls", web); strings.Contains(out, "cargo-") {
		t.Errorf("the source keeps the checkpoint: %s", out)
	}
}

// check --live says what keeps a container from moving live, and --force
// skips only what risks nothing.
func TestLiveChecks(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	stopped := h1.Unique(t, "stopped")
	h1.MustDocker(t, "create", "--name", stopped, env.Image, "true")
	t.Cleanup(func() { h1.Docker(harness.Ctx(t), "rm", "-f", stopped) })
	r := migrate(t, h1, "check", stopped, "--to", h2.Context, "--live")
	if r.Err == nil || !strings.Contains(r.Combined(), "is not running: a live move carries running processes") {
		t.Fatalf("check --live of a stopped container: %v\n%s", r.Err, r.Combined())
	}

	talker := h1.Unique(t, "talker")
	h1.MustDocker(t, "run", "-d", "--name", talker, "--network", liveNetwork(t, h1), env.Image, "sh", "-c", "sleep 3600 | nc -l -p 7000 >/dev/null & sleep 1; sleep 3600 | nc 127.0.0.1 7000 >/dev/null")
	t.Cleanup(func() { h1.Docker(harness.Ctx(t), "rm", "-f", talker) })
	harness.Eventually(t, 30*time.Second, "the connection up", func() error {
		out := h1.Docker(harness.Ctx(t), "exec", talker, "cat", "/proc/net/tcp").Stdout
		if !strings.Contains(out, " 01 ") {
			return fmt.Errorf("no established connection yet")
		}
		return nil
	})
	r = migrate(t, h1, "check", talker, "--to", h2.Context, "--live")
	if r.Err == nil || !strings.Contains(r.Combined(), "established TCP connection") {
		t.Fatalf("check --live with a connection: %v\n%s", r.Err, r.Combined())
	}
	r = migrate(t, h1, "check", talker, "--to", h2.Context, "--live", "--force", "--format", "json")
	if r.Err != nil || !strings.Contains(r.Stdout, `"skipped":true`) {
		t.Fatalf("check --live --force: %v\n%s", r.Err, r.Combined())
	}

	shared := h1.Unique(t, "shared")
	h1.MustDocker(t, "run", "-d", "--name", shared, "--pid", "host", env.Image, "sleep", "3600")
	t.Cleanup(func() { h1.Docker(harness.Ctx(t), "rm", "-f", shared) })
	for _, args := range [][]string{{"--live"}, {"--live", "--force"}} {
		r = migrate(t, h1, append([]string{"check", shared, "--to", h2.Context}, args...)...)
		if r.Err == nil || !strings.Contains(r.Combined(), "cannot carry --pid host") {
			t.Fatalf("check %v of a container in the host's PID namespace: %v\n%s", args, r.Err, r.Combined())
		}
	}
}
