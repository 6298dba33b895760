package federation_test

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// mutations are a container's writes, deletions and renames.
const mutations = `cd /data
echo written-on-target > new-file; echo appended >> secret; rm -r small/f7 "with space"
mv rel-link moved-link; mv small/f9 small/f9-renamed; mkdir newdir; echo x > newdir/x
rm -r empty; mkdir empty; echo replaced > empty/only`

// A volume moves from h3 to h2 and is used there at once: a container
// reads everything while the copy runs, and writes, deletes and renames.
// When the copy completes the volume settles into a plain local volume
// with the container's changes, the source is released, and everything
// holds after the source host is gone.
func TestFederatedVolumeEndToEnd(t *testing.T) {
	src, dst := env.Hosts[2], env.Hosts[1]
	vol, _ := source(t, src, 150) // the source changes below; its listing is taken then
	throttle(t, src, "150mbit")   // ~10 s for the large file

	ctrl := federate(t, src, dst, vol)
	// The source is frozen while exported.
	for _, args := range [][]string{
		{"run", "--rm", "-v", vol + ":/data", env.Image, "true"},
		{"volume", "rm", vol},
	} {
		r := src.Docker(harness.Ctx(t), args...)
		if r.Err == nil || !strings.Contains(r.Combined(), "frozen while it is exported to "+dst.Context) {
			t.Fatalf("%v on the frozen source: %v %s", args, r.Err, r.Combined())
		}
	}
	if st := src.VolumeStatus(t, vol); st["state"] != "exporting" || st["to"] != dst.Context || st["export"] != ctrl {
		t.Fatalf("source status %v", st)
	}

	if st := dst.VolumeStatus(t, vol); st["state"] != "copying" || st["source"] != src.Addr+":7450" {
		t.Fatalf("target status right after create: %v", st)
	}
	// Writes, deletions and renames while most of the data is not there;
	// then a read of everything at once.
	app := dst.Unique(t, "app")
	dst.MustDocker(t, "run", "-d", "--name", app, "-v", vol+":/data", env.Image, "sleep", "3600")
	dst.MustDocker(t, "exec", app, "sh", "-ec", mutations)
	if st := dst.VolumeStatus(t, vol); st["state"] != "copying" {
		t.Fatalf("the copy finished before the container's changes: the throttle is too loose (%v)", st)
	}
	during := dst.MustDocker(t, "exec", app, "sh", "-c", listScript)

	st := waitState(t, dst, vol, "complete", 3*time.Minute)
	for _, k := range []string{"started_at", "updated_at", "completed_at"} {
		if _, err := time.Parse(time.RFC3339, fmt.Sprint(st[k])); err != nil {
			t.Errorf("%s = %v: %v", k, st[k], err)
		}
	}
	if st["files_copied"] != st["files_total"] || st["bytes_copied"] != st["bytes_total"] {
		t.Fatalf("complete but %v", st)
	}
	// The target told the source, which released the volume.
	waitState(t, src, ctrl, "complete", time.Minute)
	if st := src.VolumeStatus(t, vol); st["state"] != "local" {
		t.Fatalf("source still frozen after completion: %v", st)
	}
	// The same changes made to the source give what the target showed.
	src.Run(t, "-v", vol+":/data", env.Image, "sh", "-ec", mutations)
	want := listing(t, src, vol)
	sameListing(t, "what the container read during the copy", during, want)

	// A restart takes the container onto the settled, plain volume.
	dst.MustDocker(t, "restart", "-t", "1", app)
	sameListing(t, "the volume after settling", dst.MustDocker(t, "exec", app, "sh", "-c", listScript), want)
	if !strings.Contains(want, "./new-file|") || strings.Contains(want, "./small/f7|") || strings.Contains(want, "./with space|") {
		t.Fatalf("the changes are not in the listing:\n%s", want)
	}

	// The source host goes away for good.
	src.MustDocker(t, "volume", "rm", ctrl)
	src.MustDocker(t, "volume", "rm", vol)
	src.StopEngine(t)
	t.Cleanup(func() { src.RestartEngine(t) }) // for the tests after this one
	dst.MustDocker(t, "restart", "-t", "1", app)
	sameListing(t, "the volume without its source host", dst.MustDocker(t, "exec", app, "sh", "-c", listScript), want)
	if st := dst.VolumeStatus(t, vol); st["state"] != "complete" {
		t.Fatalf("status without the source: %v", st)
	}
}

// The link to the source goes down in the middle of the copy: the target
// shows the copy stalled with the error and carries on when it is back.
func TestLinkDownMidCopy(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	vol, want := source(t, src, 100)
	throttle(t, src, "100mbit")
	federate(t, src, dst, vol)
	before := midCopy(t, dst, vol)

	if r := src.Exec(harness.Ctx(t), "ip", "link", "set", "eth0", "down"); r.Err != nil {
		t.Fatal(r.Err)
	}
	up := false
	defer func() {
		if !up {
			src.Exec(harness.Ctx(t), "ip", "link", "set", "eth0", "up")
		}
	}()
	st := waitState(t, dst, vol, "stalled", 2*time.Minute)
	if st["error"] == nil || st["error"] == "" || copied(st) < before {
		t.Fatalf("stalled status: %v (had %d bytes)", st, before)
	}
	if r := src.Exec(harness.Ctx(t), "ip", "link", "set", "eth0", "up"); r.Err != nil {
		t.Fatal(r.Err)
	}
	up = true
	waitState(t, dst, vol, "complete", 3*time.Minute)
	sameListing(t, "the volume after the link came back", listing(t, dst, vol), want)
}

// The target's plugin is killed in the middle of the copy: the engine
// restarts it and the copy resumes where it was.
func TestTargetPluginKilledMidCopy(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	vol, want := source(t, src, 100)
	throttle(t, src, "100mbit")
	federate(t, src, dst, vol)
	before := midCopy(t, dst, vol)
	killPlugin(t, dst)
	neverBelow(t, dst, vol, before)
	waitState(t, dst, vol, "complete", 3*time.Minute)
	sameListing(t, "the volume after the target plugin was killed", listing(t, dst, vol), want)
}

// neverBelow checks that progress survived a restart: once the plugin
// answers again and has read the volume's replica (until then its Status
// says it is recovering, and knows no progress), bytes_copied is not below
// what it was before.
func neverBelow(t *testing.T, h *harness.Host, vol string, before int64) {
	t.Helper()
	harness.Eventually(t, time.Minute, "the restarted plugin answers and recovers the volume", func() error {
		if err := h.Docker(harness.Ctx(t), "volume", "inspect", vol).Err; err != nil {
			return err
		}
		if st := h.VolumeStatus(t, vol); st["error"] == "recovering after a restart" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	if st := h.VolumeStatus(t, vol); copied(st) < before {
		t.Fatalf("bytes_copied fell from %d to %d after the restart: %v", before, copied(st), st)
	}
}

// The source's plugin restarts in the middle of the copy: its export is
// served again and the target carries on.
func TestSourcePluginRestartedMidCopy(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	vol, want := source(t, src, 100)
	throttle(t, src, "100mbit")
	ctrl := federate(t, src, dst, vol)
	midCopy(t, dst, vol)
	src.MustDocker(t, "plugin", "disable", "-f", "cargo:latest")
	src.MustDocker(t, "plugin", "enable", "cargo:latest")
	if st := src.VolumeStatus(t, ctrl); st["state"] != "exporting" {
		t.Fatalf("export after the source plugin restarted: %v", st)
	}
	waitState(t, dst, vol, "complete", 3*time.Minute)
	sameListing(t, "the volume after the source plugin restarted", listing(t, dst, vol), want)
	waitState(t, src, ctrl, "complete", time.Minute)
}

// The target's engine restarts in the middle of the copy, with a
// container writing into the volume: the container comes back with every
// byte it wrote and the copy completes.
func TestTargetEngineRestartMidCopy(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	vol, want := source(t, src, 100)
	throttle(t, src, "100mbit")
	federate(t, src, dst, vol)
	app := dst.Unique(t, "app")
	dst.MustDocker(t, "run", "-d", "--name", app, "--restart", "always", "--stop-timeout", "1", "-v", vol+":/data", env.Image,
		"sh", "-c", "echo before-restart >> /data/target-log; sleep 3600")
	before := midCopy(t, dst, vol)
	dst.RestartEngine(t)
	neverBelow(t, dst, vol, before)
	harness.Eventually(t, 2*time.Minute, "the container runs again", func() error {
		r := dst.Docker(harness.Ctx(t), "exec", app, "cat", "/data/target-log")
		if r.Err != nil {
			return r.Err
		}
		if got := strings.TrimSpace(r.Stdout); got != "before-restart\nbefore-restart" {
			return fmt.Errorf("target-log %q", got)
		}
		return nil
	})
	waitState(t, dst, vol, "complete", 3*time.Minute)
	dst.MustDocker(t, "rm", "-f", app)
	got := listing(t, dst, vol)
	sameListing(t, "the volume after the target engine restarted", strings.Replace(got, "./target-log|regular file|644|0:0|1|"+md5hex("before-restart\nbefore-restart\n")+"\n", "", 1), want)
}

// A volume moves on again before its first copy finished (h1 to h2 to
// h3): h2 exports what its container saw, its merged view, and reads of
// what h2 lacks go on to h1.
func TestSecondMoveBeforeFirstCompletes(t *testing.T) {
	h1, h2, h3 := env.Hosts[0], env.Hosts[1], env.Hosts[2]
	vol, _ := source(t, h1, 100)
	throttle(t, h1, "100mbit")
	ctrl1 := federate(t, h1, h2, vol)
	h2.Run(t, "-v", vol+":/data", env.Image, "sh", "-ec", mutations)
	midCopy(t, h2, vol)

	ctrl2 := federate(t, h2, h3, vol)
	if st := h2.VolumeStatus(t, vol); st["state"] != "exporting" || st["to"] != h3.Context {
		t.Fatalf("h2 while exporting: %v", st)
	}
	during := listing(t, h3, vol)

	waitState(t, h3, vol, "complete", 3*time.Minute)
	waitState(t, h2, ctrl2, "complete", time.Minute)
	waitState(t, h1, ctrl1, "complete", 3*time.Minute)
	// Every host now agrees, the first source with the same changes made.
	h1.Run(t, "-v", vol+":/data", env.Image, "sh", "-ec", mutations)
	want := listing(t, h1, vol)
	sameListing(t, "h3 during its copy", during, want)
	sameListing(t, "h3 after its copy", listing(t, h3, vol), want)
	sameListing(t, "h2 after both copies", listing(t, h2, vol), want)
	if st := h2.VolumeStatus(t, vol); st["state"] != "complete" {
		t.Fatalf("h2 after both copies: %v", st)
	}
}
