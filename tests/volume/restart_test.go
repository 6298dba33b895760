package volume_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// pluginComm is the plugin binary's command name as the kernel keeps it
// (15 characters).
const pluginComm = "cargo-volume-pl"

// checkIntact asserts a volume is listed, described and readable by a
// new container, and that the writer container still writes into it.
func checkIntact(t *testing.T, h *harness.Host, vol, writer string, linesBefore int) {
	t.Helper()
	if !contains(volumeNames(t, h), vol) {
		t.Fatalf("volume %s no longer listed", vol)
	}
	if v := inspectVolume(t, h, vol); v.Status["state"] != "local" {
		t.Fatalf("volume inspect after restart: %+v", v)
	}
	if got := run(t, h, "-v", vol+":/data", env.Image, "cat", "/data/before"); got != "written before" {
		t.Fatalf("data written before the restart reads %q", got)
	}
	n := growing(t, h, writer, "/data/log", linesBefore)
	// What the writer wrote is visible to others, all lines in order.
	seq := run(t, h, "-v", vol+":/data", env.Image, "sh", "-c", "head -n "+fmt.Sprint(n)+" /data/log | tr '\\n' ' '")
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "%d ", i)
	}
	if seq != strings.TrimSpace(want.String()) {
		t.Fatalf("log lost lines: %q", seq)
	}
}

func prepare(t *testing.T, h *harness.Host) (vol, writer string, n int) {
	t.Helper()
	vol, writer = name(t, h, "v"), name(t, h, "w")
	h.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	run(t, h, "-v", vol+":/data", env.Image, "sh", "-c", "printf 'written before' > /data/before")
	startWriter(t, h, writer, vol)
	n, err := lines(h, writer, "/data/log")
	if err != nil {
		t.Fatal(err)
	}
	return vol, writer, n
}

// release stops the writer and checks the plugin lets the volume go
// completely: no mount left behind, removable.
func release(t *testing.T, h *harness.Host, vol, writer string) {
	t.Helper()
	h.MustDocker(t, "rm", "-f", writer)
	if n := mounts(t, h, vol); n != 0 {
		t.Fatalf("%d mounts of %s left after its last container went", n, vol)
	}
	h.MustDocker(t, "volume", "rm", vol)
}

// `docker plugin disable -f` + `enable` while a container writes into a
// volume: the volume list, the data and the container's writes survive.
func TestPluginRestart(t *testing.T) {
	h := env.Hosts[0]
	vol, writer, n := prepare(t, h)
	h.MustDocker(t, "plugin", "disable", "-f", "cargo:latest")
	// The container keeps its mount while the plugin is away.
	n = growing(t, h, writer, "/data/log", n)
	h.MustDocker(t, "plugin", "enable", "cargo:latest")
	checkIntact(t, h, vol, writer, n)
	release(t, h, vol, writer)
}

// The plugin process is killed; the engine starts it again and nothing is
// lost, including the mount reference the running container holds.
func TestPluginCrash(t *testing.T) {
	h := env.Hosts[0]
	vol, writer, n := prepare(t, h)
	pids := h.Processes(t, pluginComm)
	if len(pids) != 1 {
		t.Fatalf("plugin processes on %s: %v", h.Name, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the engine restarts the plugin", func() error {
		now := h.Processes(t, pluginComm)
		if len(now) != 1 || now[0] == pids[0] {
			return fmt.Errorf("plugin processes %v (killed %d)", now, pids[0])
		}
		return nil
	})
	harness.Eventually(t, time.Minute, "the restarted plugin answers", func() error {
		return h.Docker(harness.Ctx(t), "volume", "inspect", vol).Err
	})
	checkIntact(t, h, vol, writer, n)
	release(t, h, vol, writer)
}

// The engine restarts (stopping its containers); a container with a
// restart policy comes back with its volume and data.
func TestEngineRestart(t *testing.T) {
	h := env.Hosts[1]
	vol, writer, n := prepare(t, h)
	h.RestartEngine(t)
	harness.Eventually(t, 2*time.Minute, "the writer runs again", func() error {
		r := h.Docker(harness.Ctx(t), "inspect", "-f", "{{.State.Running}}", writer)
		if r.Err != nil {
			return r.Err
		}
		if strings.TrimSpace(r.Stdout) != "true" {
			return fmt.Errorf("running=%s", strings.TrimSpace(r.Stdout))
		}
		return nil
	})
	checkIntact(t, h, vol, writer, n)
	release(t, h, vol, writer)
}
