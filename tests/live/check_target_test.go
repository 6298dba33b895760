package live_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// check --live refuses a target whose engine cannot checkpoint at all
// (experimental features off, the engine's default), even with --force.
func TestLiveChecksExperimentalOff(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web := h1.Unique(t, "web")
	h1.MustDocker(t, "run", "-d", "--name", web, "--network", liveNetwork(t, h1), env.Image, "sleep", "3600")
	t.Cleanup(func() { h1.Docker(harness.Ctx(t), "rm", "-f", web) })
	h2.WithoutExperimental(t)
	want := "the engine of " + h2.Context + " has experimental features off, and checkpoints need them: add \"experimental\": true to its daemon.json and restart it"
	for _, args := range [][]string{{"--live"}, {"--live", "--force"}} {
		r := migrate(t, h1, append([]string{"check", web, "--to", h2.Context}, args...)...)
		if r.Err == nil || !strings.Contains(r.Combined(), want) {
			t.Fatalf("check %v against a target with experimental off: %v\n%s", args, r.Err, r.Combined())
		}
	}
	// A move without --live needs no checkpoint: that check is not made.
	if r := migrate(t, h1, "check", web, "--to", h2.Context); r.Err != nil {
		t.Fatalf("check without --live: %v\n%s", r.Err, r.Combined())
	}
}

// check --live refuses a target without the memory the container uses
// (skippable: the restore would fail and roll back) and a target without
// CRIU (never skippable), each saying what to do.
func TestLiveChecksOnTarget(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	const holds = 2 << 30
	big := h1.Unique(t, "big")
	// The container's memory is a file in its /dev/shm: charged to it
	// like process memory, and written at the kernel's speed.
	h1.MustDocker(t, "run", "-d", "--name", big, "--network", liveNetwork(t, h1), "--shm-size", "2100m", env.Image,
		"sh", "-c", fmt.Sprintf("head -c %d /dev/zero > /dev/shm/held && touch /tmp/ready && exec sleep 3600", holds))
	t.Cleanup(func() { h1.Docker(harness.Ctx(t), "rm", "-f", big) })
	harness.Eventually(t, 2*time.Minute, "the container holding its memory", func() error {
		return h1.Docker(harness.Ctx(t), "exec", big, "test", "-f", "/tmp/ready").Err
	})

	// Both hosts share this machine: leave it half of what the container
	// holds, for as short a time as each check takes.
	check := func(args ...string) harness.Result {
		release := takeMemory(t, holds/2)
		defer release()
		return migrate(t, h1, append([]string{"check", big, "--to", h2.Context, "--live"}, args...)...)
	}
	r := check()
	forced := check("--force", "--format", "json")
	if r.Err == nil || !strings.Contains(r.Combined(), "of memory but "+h2.Context+" has") || !strings.Contains(r.Combined(), "free memory there first") {
		t.Fatalf("check --live with too little memory on the target: %v\n%s", r.Err, r.Combined())
	}
	if forced.Err != nil || !checkSkipped(t, forced.Stdout, "memory on target") {
		t.Fatalf("check --live --force with too little memory: %v\n%s", forced.Err, forced.Combined())
	}

	// Without the image on the target the probe waits for the move's
	// checkpoint phase, once the image is there: the move stops there,
	// before the container does.
	h2.WithoutCRIU(t)
	started := h1.MustDocker(t, "inspect", "-f", "{{.State.StartedAt}}", big)
	noCRIU := "the engine of " + h2.Context + " cannot checkpoint a container (is CRIU"
	// --force: what else this machine's memory does meanwhile must not
	// stop the move before the probe.
	r = migrate(t, h1, big, "--to", h2.Context, "--live", "--force")
	if r.Err == nil || !strings.Contains(r.Combined(), noCRIU) {
		t.Fatalf("live move to a target without CRIU: %v\n%s", r.Err, r.Combined())
	}
	if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", big); got != "true "+started {
		t.Fatalf("the container after the refused move: %s, want running since %s", got, started)
	}
	if r := h2.Docker(harness.Ctx(t), "inspect", big); r.Err == nil {
		t.Fatalf("%s exists on %s after the refused move", big, h2.Name)
	}
	for _, args := range [][]string{{"--live"}, {"--live", "--force"}} {
		r = migrate(t, h1, append([]string{"check", big, "--to", h2.Context}, args...)...)
		if r.Err == nil || !strings.Contains(r.Combined(), noCRIU) {
			t.Fatalf("check %v against a target without CRIU: %v\n%s", args, r.Err, r.Combined())
		}
	}
}

// checkSkipped tells whether the JSON report of a check says the check
// named name failed and was skipped by --force (which passes it).
func checkSkipped(t *testing.T, out, name string) bool {
	t.Helper()
	var rep struct {
		Checks []struct {
			Name    string `json:"name"`
			OK      bool   `json:"ok"`
			Skipped bool   `json:"skipped"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("the check's report: %v\n%s", err, out)
	}
	for _, c := range rep.Checks {
		if c.Name == name {
			return c.Skipped
		}
	}
	return false
}

// takeMemory fills a tmpfs until the machine has only leave bytes of
// memory available (there is no swap), and returns what frees it again.
func takeMemory(t *testing.T, leave int64) func() {
	t.Helper()
	avail := memAvailable(t)
	if avail <= leave {
		t.Fatalf("only %d bytes of memory available, want more than %d", avail, leave)
	}
	dir := t.TempDir()
	size := avail - leave
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			if err := unix.Unmount(dir, 0); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(release)
	f, err := os.Create(filepath.Join(dir, "taken"))
	if err == nil {
		err = unix.Fallocate(int(f.Fd()), 0, 0, size)
		f.Close()
	}
	if err != nil {
		release()
		t.Fatalf("taking %d bytes of memory: %v", size, err)
	}
	t.Logf("took %d MiB of memory, %d MiB left available", size>>20, memAvailable(t)>>20)
	return release
}

func memAvailable(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no MemAvailable in /proc/meminfo")
	return 0
}
