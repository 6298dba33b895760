package federation_test

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

// workerComm is the command name of the plugin's worker, the process the
// plugin's holder (cargo-volume-pl, PID 1 of the plugin) starts again when
// it dies.
const workerComm = "cargo-worker"

func workerPID(t *testing.T, h *harness.Host) int {
	t.Helper()
	pids := h.Processes(t, workerComm)
	if len(pids) != 1 {
		t.Fatalf("plugin workers on %s: %v", h.Name, pids)
	}
	return pids[0]
}

// The plugin's worker dies while a container reads a large file of a
// federated volume that is not copied yet: SIGKILLed (as the OOM killer
// does), or panicking in the copy's goroutines. The holder keeps the FUSE
// view's connection and starts the worker again, which serves the view
// again and is asked for the read the dead one had taken. The container's
// read completes with the source's bytes; the engine never notices (the
// plugin is not restarted); a container still using the mount made before
// the crash does not stop a new one.
//
// The background copy is held (as in TestConcurrentReadsOfUncopiedFile),
// so every byte read comes from the source, over a link slow enough that
// the read lasts seconds. To panic, the pause becomes a panic: the next
// chunk of the background copy to be journaled panics; the pause is back
// as soon as the worker is gone, before the next one journals anything.
func TestWorkerCrashDuringRead(t *testing.T) {
	tests := []struct {
		name string
		// crash makes the worker old die; status is how the holder
		// says it ended.
		crash  func(t *testing.T, h *harness.Host, old int)
		status string
	}{
		{"killed", func(t *testing.T, _ *harness.Host, old int) {
			if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}, "killed by SIGKILL"},
		{"panics", func(t *testing.T, h *harness.Host, _ int) {
			armFailpoints(t, h, "replica.chunk.before-log=panic")
		}, "exit status 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := env.Hosts[0], env.Hosts[1]
			env.PluginLogOnFailure(t)
			vol := src.Unique(t, "v")
			src.MustDocker(t, "volume", "create", "-d", "cargo", vol)
			const sizeMB = 48
			src.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > /data/big", sizeMB<<20))
			want := src.Run(t, "-v", vol+":/data:ro", env.Image, "md5sum", "/data/big")

			armFailpoints(t, dst, "replica.chunk.before-log=pause")
			federate(t, src, dst, vol)
			// Released before the volume is removed, whatever happens:
			// removing it waits for the fetches the pause holds.
			t.Cleanup(func() { os.Remove(filepath.Join(stateDir(dst), "failpoints")) })
			throttle(t, src, "40mbit")

			holder := pluginPID(t, dst)
			user := dst.Unique(t, "user")
			dst.MustDocker(t, "run", "-d", "--name", user, "-v", vol+":/data:ro", env.Image, "sleep", "600")
			reader := dst.Unique(t, "reader")
			dst.MustDocker(t, "run", "-d", "--name", reader, "-v", vol+":/data:ro", env.Image, "sh", "-c",
				"head -c 4194304 /data/big > /dev/null && echo started && md5sum /data/big")
			harness.Eventually(t, time.Minute, "the container's read is under way", func() error {
				if out := dst.MustDocker(t, "logs", reader); !strings.Contains(out, "started") {
					return fmt.Errorf("logs %q", out)
				}
				return nil
			})

			logFrom := len(dst.EngineLog())
			old := workerPID(t, dst)
			tc.crash(t, dst, old)
			crashed := time.Now()
			harness.Eventually(t, time.Minute, "the holder starts the worker again", func() error {
				if now := dst.Processes(t, workerComm); len(now) != 1 || now[0] == old {
					return fmt.Errorf("workers %v (the crashed one %d)", now, old)
				}
				return nil
			})
			armFailpoints(t, dst, "replica.chunk.before-log=pause")
			// How long the view had no server, to within a poll.
			for time.Since(crashed) < time.Minute && !strings.Contains(dst.EngineLog()[logFrom:], "serving the view of the source again") {
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("the view was served again %v after the crash", time.Since(crashed).Round(10*time.Millisecond))

			if code := dst.MustDocker(t, "wait", reader); code != "0" {
				t.Fatalf("the reader exited %s: %s", code, dst.MustDocker(t, "logs", reader))
			}
			t.Logf("the read completed %v after the crash", time.Since(crashed).Round(100*time.Millisecond))
			if got := dst.MustDocker(t, "logs", reader); got != "started\n"+want {
				t.Fatalf("the container read %q, the source has %q", got, want)
			}
			log := dst.EngineLog()[logFrom:]
			if !strings.Contains(log, "the plugin's worker exited") || !strings.Contains(log, tc.status) ||
				!strings.Contains(log, "serving the view of the source again") {
				t.Fatalf("the plugin's log does not say the worker ended with %s and served the view again", tc.status)
			}
			if now := pluginPID(t, dst); now != holder {
				t.Fatalf("the plugin was restarted (pid %d, was %d): the engine saw the crash", now, holder)
			}
			// A new mount while the container from before the crash
			// still uses the volume: its overlay reads a live view, not
			// one to refuse.
			if got := dst.Run(t, "-v", vol+":/data:ro", env.Image, "md5sum", "/data/big"); got != want {
				t.Fatalf("a new container reads %q, the source has %q", got, want)
			}
			if got := dst.MustDocker(t, "exec", user, "md5sum", "/data/big"); got != want {
				t.Fatalf("the container from before the crash reads %q, the source has %q", got, want)
			}

			armFailpoints(t, dst, "")
			waitState(t, dst, vol, "complete", 2*time.Minute)
		})
	}
}
