package federation_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// `docker plugin disable -f` unmounts the plugin's mounts from the
// engine, but a running container keeps the overlay it got, over a FUSE
// view that died with the plugin. The plugin enabled again cannot see that
// overlay in its mount table; it asks the kernel whether the upper layer
// is in use, and refuses a second overlay on it until the container is
// restarted.
func TestNoSecondOverlayAfterDisableForce(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[2]
	env.PluginLogOnFailure(t)
	vol, _ := source(t, src, 100)
	throttle(t, src, "20mbit") // the copy outlasts the test
	federate(t, src, dst, vol)
	holder := dst.Unique(t, "holder")
	dst.MustDocker(t, "run", "-d", "--name", holder, "-v", vol+":/data", env.Image,
		"sh", "-c", "echo kept > /data/written; exec sleep 3600")
	t.Cleanup(func() { dst.Docker(harness.Ctx(t), "rm", "-f", holder) })
	harness.Eventually(t, 30*time.Second, "the holder wrote", func() error {
		return dst.Docker(harness.Ctx(t), "exec", holder, "cat", "/data/written").Err
	})
	dst.MustDocker(t, "plugin", "disable", "-f", "cargo")
	dst.MustDocker(t, "plugin", "enable", "cargo")
	harness.Eventually(t, time.Minute, "the volume recovers", func() error {
		if st := dst.VolumeStatus(t, vol); st["error"] == "recovering after a restart" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	r := dst.Docker(harness.Ctx(t), "run", "--rm", "-v", vol+":/data", env.Image, "true")
	if r.Err == nil || !strings.Contains(r.Combined(), "containers still use the volume's previous mount") {
		t.Fatalf("a second container beside the holder's overlay: %v %s", r.Err, r.Combined())
	}
	dst.MustDocker(t, "restart", "-t", "1", holder)
	if got := dst.MustDocker(t, "exec", holder, "sh", "-c", "cat /data/written /data/small/f1"); got != "kept\nsmall file 1" {
		t.Fatalf("the restarted holder reads %q", got)
	}
	if got := dst.Run(t, "-v", vol+":/data", env.Image, "cat", "/data/written"); got != "kept" {
		t.Fatalf("a second container once the holder restarted reads %q", got)
	}
}
