package federation_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// scaleFiles is how many files the volume of TestTargetPluginKilledAtScale
// holds, in scaleDirs directories: 200,000, or CARGO_SCALE_FILES (make
// bench-scale runs it with 1,000,000). Before the plugin recovered in the
// background it took 3.1 s to answer after a restart at 200,000, and at
// 1,000,000 the engine disabled it. On the 2-core test machine, 200,000
// files take about 40 s in all (making them 8 s, the copy 20 s).
var scaleFiles = scaleCount()

const scaleDirs = 20

func scaleCount() int {
	if n, err := strconv.Atoi(os.Getenv("CARGO_SCALE_FILES")); err == nil && n >= scaleDirs*10 {
		return n - n%scaleDirs
	}
	return 200_000
}

// answerBound is how soon after its process starts a restarted plugin
// must answer List and Get, whatever it holds: the engine retries a
// plugin's socket for a few seconds only, and then disables it.
const answerBound = time.Second

// The target's plugin is SIGKILLed in the middle of copying a volume of
// many small files. The engine restarts it and never disables it; the
// new process answers List and Get within a second of its start, while
// it reads the replica in the background; the copy resumes from where it
// was and completes with every file.
func TestTargetPluginKilledAtScale(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	env.PluginLogOnFailure(t)
	vol := src.Unique(t, "v")
	src.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	began := time.Now()
	// One awk writes every file: a shell loop forks per file and takes
	// minutes.
	src.Run(t, "-v", vol+":/data", env.Image, "sh", "-ec", scaleFill)
	t.Logf("%d files made in %v", scaleFiles, time.Since(began).Round(time.Millisecond))

	began = time.Now()
	ctrl := federate(t, src, dst, vol)
	t.Logf("exported and federated in %v", time.Since(began).Round(time.Millisecond))
	var before int64
	harness.Eventually(t, 2*time.Minute, "the copy is under way", func() error {
		st := dst.VolumeStatus(t, vol)
		f, _ := st["files_copied"].(float64)
		if before = int64(f); st["state"] != "copying" || before < int64(scaleFiles/10) || before > int64(scaleFiles/2) {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	t.Logf("%d files copied %v after the federated volume's create", before, time.Since(began).Round(time.Millisecond))

	logFrom := len(dst.EngineLog())
	old := pluginPID(t, dst)
	killed := time.Now()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	started := restarted(t, dst, old)
	listed := answers(t, dst, started, "volume", "ls", "-q", "--filter", "driver=cargo:latest")
	if !slices.Contains(strings.Fields(listed), vol) {
		t.Fatalf("the restarted plugin does not list %s: %q", vol, listed)
	}
	answers(t, dst, started, "volume", "inspect", vol)
	t.Logf("kill to new process %v, to List and Get answered %v",
		started.Sub(killed).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))

	// The engine keeps the plugin enabled throughout, and the copy
	// resumes from where it was once the replica is read.
	enabled := func() {
		t.Helper()
		if got := dst.MustDocker(t, "plugin", "inspect", "-f", "{{.Enabled}}", "cargo"); got != "true" {
			t.Fatalf("the engine disabled the plugin: Enabled %s", got)
		}
	}
	resumed := false
	var st map[string]any
	harness.Eventually(t, time.Duration(max(1, scaleFiles/200_000))*3*time.Minute, "the copy completes", func() error {
		enabled()
		st = dst.VolumeStatus(t, vol)
		if st["error"] == "recovering after a restart" {
			return fmt.Errorf("status %v", st)
		}
		if f, _ := st["files_copied"].(float64); !resumed {
			if int64(f) < before {
				t.Fatalf("files_copied fell from %d to %d after the restart: %v", before, int64(f), st)
			}
			resumed = true
			t.Logf("the copy resumed at %d files %v after the kill", int64(f), time.Since(killed).Round(time.Millisecond))
		}
		if st["state"] != "complete" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	t.Logf("complete %v after the kill", time.Since(killed).Round(time.Millisecond))
	if log := dst.EngineLog()[logFrom:]; strings.Contains(log, "found but disabled") {
		t.Fatal("the engine found the plugin disabled after the kill")
	} else {
		t.Logf("the engine logged %d times that it could not connect to the plugin", strings.Count(log, "Unable to connect to plugin"))
	}
	for _, k := range []string{"files_total", "files_copied"} {
		if st[k] != float64(scaleFiles) {
			t.Errorf("%s = %v, want %d: %v", k, st[k], scaleFiles, st)
		}
	}
	waitState(t, src, ctrl, "complete", time.Minute)
	got := dst.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", scaleSum)
	if want := fmt.Sprintf("%d\n%s", scaleFiles, scaleWant()); got != want {
		t.Fatalf("the copied volume: files and checksum %q, want %q", got, want)
	}

	// Removing this many files takes the plugin longer than the engine
	// waits for an answer: remove them here, not behind the next tests.
	began = time.Now()
	removeVolumes(t, map[*harness.Host][]string{dst: {vol}, src: {ctrl, vol}})
	t.Logf("volumes removed in %v", time.Since(began).Round(time.Millisecond))
}

// scaleFill writes scaleFiles files "file I", spread over scaleDirs
// directories.
var scaleFill = fmt.Sprintf(`cd /data
i=0; while [ $i -lt %[2]d ]; do mkdir d$i; i=$((i+1)); done
awk 'BEGIN { for (i = 0; i < %[1]d; i++) { f = "d" int(i / (%[1]d / %[2]d)) "/f" i; print "file " i > f; close(f) } }'`,
	scaleFiles, scaleDirs)

// scaleSum counts a volume's files and sums their content in path order.
const scaleSum = `cd /data && find . -type f | wc -l && find . -type f | LC_ALL=C sort | xargs cat | md5sum | cut -d' ' -f1`

// scaleWant is scaleSum's checksum of what scaleFill writes.
func scaleWant() string {
	paths := make([]string, scaleFiles)
	for i := range paths {
		paths[i] = fmt.Sprintf("./d%d/f%d", i/(scaleFiles/scaleDirs), i)
	}
	slices.Sort(paths)
	h := md5.New()
	for _, p := range paths {
		_, i, _ := strings.Cut(p[2:], "/f")
		fmt.Fprintf(h, "file %s\n", i)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// restarted waits for the engine to start h's plugin again after old was
// killed, and returns when it saw the new process.
func restarted(t *testing.T, h *harness.Host, old int) time.Time {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if now := h.Processes(t, "cargo-volume-pl"); len(now) == 1 && now[0] != old {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine did not restart the plugin of %s within a minute", h.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answers runs a docker command against h until it succeeds, and fails
// the test unless that is within answerBound of started.
func answers(t *testing.T, h *harness.Host, started time.Time, args ...string) string {
	t.Helper()
	for {
		r := h.Docker(harness.Ctx(t), args...)
		if r.Err == nil {
			if d := time.Since(started); d > answerBound {
				t.Fatalf("docker %s answered %v after the plugin started, want within %v", strings.Join(args, " "), d, answerBound)
			}
			return r.Stdout
		}
		if time.Since(started) > 10*answerBound {
			t.Fatalf("docker %s: no answer %v after the plugin started: %v", strings.Join(args, " "), time.Since(started), r.Err)
		}
	}
}

// removeVolumes removes volumes, each host's in order and the hosts at
// once, and waits until they are gone: an engine gives up waiting for the
// plugin's answer after 30 s while the plugin goes on removing.
func removeVolumes(t *testing.T, vols map[*harness.Host][]string) {
	t.Helper()
	var wg sync.WaitGroup
	for h, names := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, n := range names {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				for h.Docker(ctx, "volume", "inspect", n).Err == nil {
					h.Docker(ctx, "volume", "rm", n)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	for h, names := range vols {
		for _, n := range names {
			if r := h.Docker(harness.Ctx(t), "volume", "inspect", n); r.Err == nil {
				t.Errorf("volume %s on %s is still there", n, h.Name)
			}
		}
	}
}
