package federation_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// stateDir is where host h keeps the cargo plugin's state, as seen from
// this machine: the engine's /var/lib/docker/plugins/cargo, the plugin's
// /mnt/state.
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

// record is a volume's record as the plugin keeps it on disk.
type record struct {
	Kind       string `json:"kind"`
	Federation struct {
		CompletedAt string `json:"completed_at"`
		SettleStep  string `json:"settle_step"`
		Settled     bool   `json:"settled"`
	} `json:"federation"`
}

func readRecord(h *harness.Host, vol string) (record, error) {
	var r record
	b, err := os.ReadFile(filepath.Join(stateDir(h), "volumes", vol, "meta.json"))
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	return r, err
}

func gone(p string) bool {
	_, err := os.Lstat(p)
	return errors.Is(err, fs.ErrNotExist)
}

// settlePoints are the boundaries of the settle steps, each with what the
// volume's directory shows once settling has reached it (and, paused
// there, cannot go past it).
var settlePoints = []struct {
	point   string
	reached func(r record, dir string) bool
}{
	{"driver.settle.start", func(r record, _ string) bool { return r.Federation.CompletedAt != "" }},
	{"driver.settle.before-merge", func(r record, _ string) bool { return r.Federation.SettleStep == "merge" }},
	{"driver.settle.after-merge", func(r record, dir string) bool {
		return r.Federation.SettleStep == "merge" && gone(filepath.Join(dir, "work"))
	}},
	{"driver.settle.before-cleanup", func(r record, _ string) bool { return r.Federation.SettleStep == "cleanup" }},
	{"driver.settle.before-record", func(r record, dir string) bool {
		return r.Federation.SettleStep == "cleanup" && gone(filepath.Join(dir, "upper")) && gone(filepath.Join(dir, "manifest.gz"))
	}},
	{"driver.settle.after-record", func(r record, _ string) bool { return r.Kind == "local" && r.Federation.Settled }},
}

// The target's plugin is killed at each step boundary of settling a
// volume a container changed during its copy. The engine restarts the
// plugin, which answers at once while it recovers (the volume's Status
// says so), serves the host's other volumes throughout, and finishes the
// settle: the volume holds exactly what the container saw.
//
// The plugin is killed from outside while a failpoint holds it at the
// boundary: a managed plugin is PID 1 of its PID namespace, which ignores
// the SIGKILL it sends itself (a failpoint's kill).
func TestTargetPluginKilledWhileSettling(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	env.PluginLogOnFailure(t)
	other := dst.Unique(t, "other")
	dst.MustDocker(t, "volume", "create", "-d", "cargo", other)
	writer := dst.Unique(t, "writer")
	dst.MustDocker(t, "run", "-d", "--name", writer, "-v", other+":/data", env.Image,
		"sh", "-c", "while true; do date +%s%N >> /data/log; sleep 0.2; done")
	for _, sp := range settlePoints {
		t.Run(strings.TrimPrefix(sp.point, "driver.settle."), func(t *testing.T) {
			vol, _ := source(t, src, 20)
			throttle(t, src, "40mbit") // ~4 s
			ctrl := federate(t, src, dst, vol)
			dst.Run(t, "-v", vol+":/data", env.Image, "sh", "-ec", mutations)
			if st := dst.VolumeStatus(t, vol); st["state"] != "copying" {
				t.Fatalf("the copy finished before the container's changes: the throttle is too loose (%v)", st)
			}
			dir := filepath.Join(stateDir(dst), "volumes", vol)
			armFailpoints(t, dst, sp.point+"=pause")
			harness.Eventually(t, 2*time.Minute, "settling reaches "+sp.point, func() error {
				r, err := readRecord(dst, vol)
				if err != nil {
					return err
				}
				if !sp.reached(r, dir) {
					return fmt.Errorf("record %+v", r)
				}
				return nil
			})
			// Held there; the next process holds the settle it resumes.
			armFailpoints(t, dst, sp.point+"=pause\ndriver.settle.resume=pause")
			old := pluginPID(t, dst)
			if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			restartedAnswers(t, dst, old, vol)
			resumes := sp.point != "driver.settle.after-record"
			if resumes {
				if st := dst.VolumeStatus(t, vol); st["state"] != "complete" || st["error"] != "recovering after a restart" {
					t.Fatalf("status while the settle waits to resume: %v", st)
				}
			}
			// The host's other volume works meanwhile, and its writer never
			// stopped.
			if got := dst.Run(t, "-v", other+":/data", env.Image, "sh", "-c", "test -s /data/log && echo ok"); got != "ok" {
				t.Fatalf("the other volume: %q", got)
			}
			armFailpoints(t, dst, "")
			st := waitState(t, dst, vol, "complete", 2*time.Minute)
			harness.Eventually(t, time.Minute, "the volume settles", func() error {
				st = dst.VolumeStatus(t, vol)
				if st["settled"] != true || st["error"] != nil {
					return fmt.Errorf("status %v", st)
				}
				return nil
			})
			if r, err := readRecord(dst, vol); err != nil || r.Kind != "local" || r.Federation.SettleStep != "" {
				t.Fatalf("record after settling: %+v %v", r, err)
			}
			for _, p := range []string{"upper", "work", "partial", "manifest.gz"} {
				if !gone(filepath.Join(dir, p)) {
					t.Errorf("%s left after settling", p)
				}
			}
			waitState(t, src, ctrl, "complete", time.Minute)
			src.Run(t, "-v", vol+":/data", env.Image, "sh", "-ec", mutations)
			sameListing(t, "the volume settled after the kill at "+sp.point, listing(t, dst, vol), listing(t, src, vol))
		})
	}
	before := strings.Count(dst.MustDocker(t, "exec", writer, "cat", "/data/log"), "\n")
	harness.Eventually(t, 30*time.Second, "the writer of the other volume still writes", func() error {
		if n := strings.Count(dst.MustDocker(t, "exec", writer, "cat", "/data/log"), "\n"); n <= before {
			return fmt.Errorf("%d lines, had %d", n, before)
		}
		return nil
	})
}

// restartedAnswers waits for the engine to restart h's plugin (killed as
// old) and checks the new one lists vol within a second of its start.
// The measure holds the docker CLI's own runs too (0.1–0.5 s each on a
// loaded 2-core machine), so it allows one more second: still far inside
// the engine's retry window, past which it disables the plugin.
func restartedAnswers(t *testing.T, h *harness.Host, old int, vol string) {
	t.Helper()
	var started time.Time
	harness.Eventually(t, time.Minute, "the engine restarts the plugin", func() error {
		if now := h.Processes(t, "cargo-volume-pl"); len(now) != 1 || now[0] == old {
			return fmt.Errorf("plugin processes %v (killed %d)", now, old)
		}
		started = time.Now()
		return nil
	})
	for {
		r := h.Docker(harness.Ctx(t), "volume", "ls", "-q", "--filter", "driver=cargo:latest")
		if r.Err == nil && strings.Contains(r.Stdout, vol) {
			break
		}
		if time.Since(started) > 10*time.Second {
			t.Fatalf("the restarted plugin does not list %s: %v %s", vol, r.Err, r.Stdout)
		}
	}
	d := time.Since(started)
	if d > 2*time.Second {
		t.Fatalf("the restarted plugin answered %v after its start, want within a second (and the CLI's own run)", d)
	}
	t.Logf("the restarted plugin listed the volume %v after its start", d.Round(time.Millisecond))
}

// After a crash the new plugin process finds the previous one's overlay
// at the mountpoint of a federated volume, held by a container, over a
// view of the source that died with the process. It mounted a second
// overlay on the same upper layer for the next container; now it refuses,
// until the containers holding the old one are restarted.
func TestNoSecondOverlayAfterCrash(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[2]
	env.PluginLogOnFailure(t)
	vol, _ := source(t, src, 100)
	throttle(t, src, "20mbit") // the copy outlasts the test
	federate(t, src, dst, vol)
	holder := dst.Unique(t, "holder")
	dst.MustDocker(t, "run", "-d", "--name", holder, "-v", vol+":/data", env.Image, "sleep", "3600")
	killPlugin(t, dst)
	harness.Eventually(t, time.Minute, "the restarted plugin answers", func() error {
		return dst.Docker(harness.Ctx(t), "volume", "inspect", vol).Err
	})
	var r harness.Result
	harness.Eventually(t, time.Minute, "the volume recovers", func() error {
		st := dst.VolumeStatus(t, vol)
		if st["error"] == "recovering after a restart" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	r = dst.Docker(harness.Ctx(t), "run", "--rm", "-v", vol+":/data", env.Image, "true")
	if r.Err == nil || !strings.Contains(r.Combined(), "containers still use the volume's previous mount") {
		t.Fatalf("a second container beside the previous mount: %v %s", r.Err, r.Combined())
	}
	if st := dst.VolumeStatus(t, vol); !strings.Contains(fmt.Sprint(st["error"]), "restart them") {
		t.Fatalf("status: %v", st)
	}
	dst.MustDocker(t, "restart", "-t", "1", holder)
	if got := dst.MustDocker(t, "exec", holder, "cat", "/data/small/f1"); got != "small file 1" {
		t.Fatalf("the restarted holder reads %q", got)
	}
	if got := dst.Run(t, "-v", vol+":/data", env.Image, "cat", "/data/small/f2"); got != "small file 2" {
		t.Fatalf("a second container once the holder restarted reads %q", got)
	}
	if n := overlaysOn(t, dst, vol); n != 1 {
		t.Fatalf("%d overlays on the volume's upper layer, want 1", n)
	}
	dst.MustDocker(t, "rm", "-f", holder)
}

// overlaysOn counts the overlays on vol's upper layer in h's mount table:
// distinct filesystems (a mount under the plugin's propagated mount shows
// twice there).
func overlaysOn(t *testing.T, h *harness.Host, vol string) int {
	t.Helper()
	r := h.Exec(harness.Ctx(t), "cat", "/proc/self/mountinfo")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	devs := map[string]bool{}
	for _, l := range strings.Split(r.Stdout, "\n") {
		if f := strings.Fields(l); len(f) > 2 && strings.Contains(l, " - overlay ") &&
			strings.Contains(l, "upperdir=/mnt/state/volumes/"+vol+"/upper,") {
			devs[f[2]] = true
		}
	}
	return len(devs)
}
