package volume_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// stateDir is where host h keeps the cargo plugin's state, as seen from
// this machine: the engine's /var/lib/docker/plugins/cargo.
func stateDir(h *harness.Host) string {
	return filepath.Join(env.Base, h.Name, "docker", "plugins", "cargo")
}

// armFailpoints makes the running plugin of h (and the next one) do what
// spec says at its failpoints; the plugin re-reads the file as it changes.
func armFailpoints(t *testing.T, h *harness.Host, spec string) {
	t.Helper()
	path := filepath.Join(stateDir(h), "failpoints")
	if err := os.WriteFile(path, []byte(spec+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

// listsWithin polls `docker volume ls` until it lists every one of vols
// and fails the test unless that happens within limit of since.
func listsWithin(t *testing.T, h *harness.Host, since time.Time, limit time.Duration, vols []string) {
	t.Helper()
	for {
		r := h.Docker(harness.Ctx(t), "volume", "ls", "-q", "--filter", "driver=cargo:latest")
		missing := 0
		for _, v := range vols {
			if !contains(strings.Fields(r.Stdout), v) {
				missing++
			}
		}
		if r.Err == nil && missing == 0 {
			break
		}
		if time.Since(since) > 10*limit {
			t.Fatalf("volume ls: %d of %d volumes missing after %v: %v", missing, len(vols), time.Since(since), r.Err)
		}
	}
	d := time.Since(since)
	if d > limit {
		t.Fatalf("volume ls answered %v after the plugin started, want within %v", d, limit)
	}
	t.Logf("volume ls listed all %d volumes %v after", len(vols), d.Round(time.Millisecond))
}

// The plugin is killed while it holds many volumes, and its recovery of
// them is held back after the restart: it answers at once all the same,
// lists every volume, shows them recovering, and a mount of one waits
// for that volume, not holding up the answers to anything else.
func TestPluginAnswersWhileRecovering(t *testing.T) {
	h := env.Hosts[0]
	env.PluginLogOnFailure(t)
	var vols []string
	for i := range 30 {
		v := name(t, h, fmt.Sprintf("r%02d", i))
		h.MustDocker(t, "volume", "create", "-d", "cargo", v)
		vols = append(vols, v)
	}
	run(t, h, "-v", vols[1]+":/data", env.Image, "sh", "-c", "echo kept > /data/kept")
	writer := name(t, h, "w")
	startWriter(t, h, writer, vols[0])
	n, err := lines(h, writer, "/data/log")
	if err != nil {
		t.Fatal(err)
	}

	armFailpoints(t, h, "driver.recover.before-volume=pause")
	pids := h.Processes(t, pluginComm)
	if len(pids) != 1 {
		t.Fatalf("plugin processes on %s: %v", h.Name, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var started time.Time
	harness.Eventually(t, time.Minute, "the engine restarts the plugin", func() error {
		if now := h.Processes(t, pluginComm); len(now) != 1 || now[0] == pids[0] {
			return fmt.Errorf("plugin processes %v (killed %d)", now, pids[0])
		}
		started = time.Now()
		return nil
	})
	listsWithin(t, h, started, time.Second, vols)
	if v := inspectVolume(t, h, vols[5]); v.Status["state"] != "local" || v.Status["error"] != "recovering after a restart" {
		t.Fatalf("status of a volume recovering: %v", v.Status)
	}
	// A container of a recovering volume waits for it; meanwhile the
	// plugin answers.
	done := make(chan harness.Result, 1)
	go func() {
		done <- h.Docker(harness.Ctx(t), "run", "--rm", "-v", vols[1]+":/data", env.Image, "cat", "/data/kept")
	}()
	listsWithin(t, h, time.Now(), time.Second, vols)
	select {
	case r := <-done:
		t.Fatalf("a container of a recovering volume did not wait for it: %v %s", r.Err, r.Combined())
	default:
	}
	// The container that held its volume through the crash still writes.
	n = growing(t, h, writer, "/data/log", n)

	armFailpoints(t, h, "")
	select {
	case r := <-done:
		if r.Err != nil || strings.TrimSpace(r.Stdout) != "kept" {
			t.Fatalf("the container once its volume recovered: %v %q", r.Err, r.Stdout)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the container did not start once its volume recovered")
	}
	harness.Eventually(t, time.Minute, "every volume recovers", func() error {
		for _, v := range vols {
			if st := inspectVolume(t, h, v).Status; st["state"] != "local" || st["error"] != nil {
				return fmt.Errorf("%s: %v", v, st)
			}
		}
		return nil
	})
	growing(t, h, writer, "/data/log", n)
	h.MustDocker(t, "rm", "-f", writer)
}

// A volume whose recovery fails (its data directory was replaced by a
// file while the plugin was disabled and a container held it) fails
// alone: the plugin starts, serves the other volumes, and shows the
// broken one failed with the error and what to do. Before, the start
// failed, and the plugin could not be enabled.
func TestBrokenVolumeIsQuarantined(t *testing.T) {
	h := env.Hosts[1]
	env.PluginLogOnFailure(t)
	good, bad := name(t, h, "good"), name(t, h, "bad")
	for _, v := range []string{good, bad} {
		h.MustDocker(t, "volume", "create", "-d", "cargo", v)
		run(t, h, "-v", v+":/data", env.Image, "sh", "-c", "echo "+v+" > /data/f")
	}
	holder := name(t, h, "holder")
	h.MustDocker(t, "run", "-d", "--name", holder, "-v", bad+":/data", env.Image, "sleep", "3600")
	h.MustDocker(t, "plugin", "disable", "-f", "cargo:latest")
	enabled := false
	defer func() {
		if !enabled {
			h.Docker(harness.Ctx(t), "plugin", "enable", "cargo:latest")
		}
	}()
	data := filepath.Join(stateDir(h), "volumes", bad, "data")
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(data, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.MustDocker(t, "plugin", "enable", "cargo:latest")
	enabled = true

	if got := run(t, h, "-v", good+":/data", env.Image, "cat", "/data/f"); got != good {
		t.Fatalf("the good volume reads %q", got)
	}
	if !contains(volumeNames(t, h), bad) {
		t.Fatalf("the broken volume is not listed")
	}
	var st map[string]any
	harness.Eventually(t, time.Minute, "the broken volume shows failed", func() error {
		st = inspectVolume(t, h, bad).Status
		if st["state"] != "failed" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	msg := fmt.Sprint(st["error"])
	if !strings.Contains(msg, "re-establishing the mount") || !strings.Contains(msg, "docker ps --filter volume="+bad) {
		t.Fatalf("the failed volume's error says neither what failed nor what to do: %q", msg)
	}
	r := h.Docker(harness.Ctx(t), "run", "--rm", "-v", bad+":/data", env.Image, "true")
	if r.Err == nil || !strings.Contains(r.Combined(), "re-establishing the mount") {
		t.Fatalf("a container of the broken volume: %v %s", r.Err, r.Combined())
	}
	h.MustDocker(t, "rm", "-f", holder)
	h.MustDocker(t, "volume", "rm", bad)
	if _, err := os.Stat(filepath.Dir(data)); !os.IsNotExist(err) {
		t.Fatalf("the broken volume's directory is left: %v", err)
	}
}
