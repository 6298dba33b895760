// Package volume_test exercises the cargo volume plugin on real engines:
// two hosts from the harness plus a local registry.
package volume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

var env *harness.Env

func TestMain(m *testing.M) {
	harness.Main(m, harness.Options{Prefix: "cgvol", Hosts: 2, Registry: true}, &env)
}

// name gives each test its own volume and container names.
func name(t *testing.T, h *harness.Host, suffix string) string {
	t.Helper()
	return h.Unique(t, suffix)
}

// run starts a throwaway container and returns its output.
func run(t *testing.T, h *harness.Host, args ...string) string {
	t.Helper()
	return h.Run(t, args...)
}

type inspected struct {
	Name       string
	Driver     string
	Mountpoint string
	Scope      string
	CreatedAt  string
	Status     map[string]any
}

func inspectVolume(t *testing.T, h *harness.Host, vol string) inspected {
	t.Helper()
	var out []inspected
	if err := json.Unmarshal([]byte(h.MustDocker(t, "volume", "inspect", vol)), &out); err != nil || len(out) != 1 {
		t.Fatalf("volume inspect %s: %v %v", vol, err, out)
	}
	return out[0]
}

func volumeNames(t *testing.T, h *harness.Host) []string {
	t.Helper()
	return strings.Fields(h.MustDocker(t, "volume", "ls", "-q", "--filter", "driver=cargo:latest"))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// mounts counts the mounts of vol the engine's namespace has under the
// plugin's propagated mount. The engine makes that directory shared by
// binding it onto itself inside /var/lib/docker, so each volume mount also
// has a hidden peer there: what matters is some while in use, none after.
func mounts(t *testing.T, h *harness.Host, vol string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := h.Exec(ctx, "cat", "/proc/self/mountinfo")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	n := 0
	for _, line := range strings.Split(r.Stdout, "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasSuffix(f[4], "/propagated-mount/"+vol) {
			n++
		}
	}
	return n
}

// lines counts the lines of a file inside a running container.
func lines(h *harness.Host, ctr, path string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := h.Docker(ctx, "exec", ctr, "sh", "-c", "wc -l < "+path)
	if r.Err != nil {
		return 0, r.Err
	}
	return strconv.Atoi(strings.TrimSpace(r.Stdout))
}

// growing waits until the file a container appends to has grown past n
// lines, proving the container still writes into its volume.
func growing(t *testing.T, h *harness.Host, ctr, path string, n int) int {
	t.Helper()
	var got int
	harness.Eventually(t, time.Minute, fmt.Sprintf("%s keeps writing %s", ctr, path), func() error {
		var err error
		if got, err = lines(h, ctr, path); err != nil {
			return err
		}
		if got <= n {
			return fmt.Errorf("%d lines, want more than %d", got, n)
		}
		return nil
	})
	return got
}

// startWriter runs a container that appends its next line number to
// /data/log five times a second, restarting with the engine and carrying
// on from the last line it finds.
func startWriter(t *testing.T, h *harness.Host, ctr, vol string) {
	t.Helper()
	h.MustDocker(t, "run", "-d", "--name", ctr, "--restart", "always", "--stop-timeout", "1", "-v", vol+":/data", env.Image,
		"sh", "-c", "i=$(cat /data/log 2>/dev/null | wc -l); while true; do i=$((i+1)); echo $i >> /data/log; sleep 0.2; done")
	growing(t, h, ctr, "/data/log", 2)
}

// waitFile waits until a file inside a running container is non-empty.
func waitFile(t *testing.T, h *harness.Host, ctr, path string) {
	t.Helper()
	h.MustDocker(t, "exec", ctr, "sh", "-c", "until [ -s "+path+" ]; do sleep 0.05; done")
}

func init() {
	// The docker CLI must not try to reach out for hints or telemetry.
	os.Setenv("DOCKER_CLI_HINTS", "false")
}
