package live_test

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

var env *harness.Env

func TestMain(m *testing.M) {
	harness.Main(m, harness.Options{Prefix: "cglv", Hosts: 2, CRIU: true}, &env)
}

// counter keeps its state only in memory: a token drawn at start and a
// count. It publishes both to /tmp/n (through a rename, so that a freeze
// never leaves the file half written); a fresh start draws a new token.
const counter = `t=$RANDOM$RANDOM; i=0; while true; do i=$((i+1)); echo "$t $i" >/tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done`

// TestCheckpointRestoreAcrossEngines checks what live migration stands
// on: the hosts' engines run with experimental features and a criu that
// works, a container checkpointed on one engine is restored on another
// from a copy of its checkpoint directory, and its process goes on with
// its memory instead of starting again.
func TestCheckpointRestoreAcrossEngines(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	if env.CRIUPath == "" {
		t.Fatal("the harness gave the engines no criu")
	}
	out, err := exec.Command(filepath.Join(env.CRIUPath, "criu"), "check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Looks good") {
		t.Fatalf("criu check: %v: %s", err, out)
	}
	for _, h := range env.Hosts {
		if got := h.MustDocker(t, "info", "-f", "{{.ExperimentalBuild}}"); got != "true" {
			t.Fatalf("%s: experimental features %q, want true", h.Name, got)
		}
	}
	version := src.MustDocker(t, "version", "-f", "{{.Server.Version}}")

	for _, tc := range []struct {
		name string
		args []string
		// refused is the error the target engine answers the restore
		// with, where it cannot restore this container at all.
		refused string
	}{
		{name: "own network namespace", refused: ownNetnsRefusal(version)},
		{name: "host network", args: []string{"--network", "host"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env.PluginLogOnFailure(t)
			name := src.Unique(t, "ctr")
			dst.Unique(t, "ctr")
			run := append(append([]string{"--name", name}, tc.args...), env.Image, "sh", "-c", counter)
			src.MustDocker(t, append([]string{"run", "-d"}, run...)...)
			harness.Eventually(t, 30*time.Second, "the counter counting", func() error {
				_, n, err := counterState(src.Docker(harness.Ctx(t), "exec", name, "cat", "/tmp/n").Stdout)
				if err == nil && n < 5 {
					err = fmt.Errorf("at %d", n)
				}
				return err
			})

			start := time.Now()
			src.MustDocker(t, "checkpoint", "create", name, "cp")
			t.Logf("checkpoint on %s (engine %s): %v", src.Name, version, time.Since(start).Round(time.Millisecond))
			// The checkpoint stopped the container: what it last wrote is
			// what its memory held when frozen.
			token, saved, err := counterState(stoppedFile(t, src, name, "/tmp/n"))
			if err != nil {
				t.Fatal(err)
			}

			// As live migration will: a container of the same config on
			// the target, the checkpoint copied into its own checkpoints
			// directory (the only one engines restore from).
			id := dst.MustDocker(t, append([]string{"create"}, run...)...)
			from := filepath.Join(src.DataRoot(), "containers", src.MustDocker(t, "inspect", "-f", "{{.Id}}", name), "checkpoints", "cp")
			to := filepath.Join(dst.DataRoot(), "containers", id, "checkpoints")
			if err := os.MkdirAll(to, 0o700); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
				t.Fatalf("copying the checkpoint: %v: %s", err, out)
			}

			start = time.Now()
			r := dst.Docker(harness.Ctx(t), "start", "--checkpoint", "cp", name)
			t.Logf("restore on %s: %v", dst.Name, time.Since(start).Round(time.Millisecond))
			if tc.refused != "" {
				if r.Err == nil || !strings.Contains(r.Combined(), tc.refused) {
					t.Fatalf("restore on engine %s: got %v, want the known refusal %q: if the engine restores now, drop the expectation", version, r.Err, tc.refused)
				}
				if got := dst.MustDocker(t, "inspect", "-f", "{{.State.Running}}", name); got != "false" {
					t.Fatalf("refused restore left the container running: %s", got)
				}
				return
			}
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			// The same token: the process was restored, not started
			// again; a higher count: it goes on.
			var tok string
			var n int
			harness.Eventually(t, 30*time.Second, "the restored counter going on", func() error {
				var err error
				tok, n, err = counterState(dst.Docker(harness.Ctx(t), "exec", name, "cat", "/tmp/n").Stdout)
				if err == nil && tok == token && n <= saved {
					err = fmt.Errorf("count %d, checkpointed at %d", n, saved)
				}
				return err
			})
			if tok != token {
				t.Fatalf("restored counter has token %s, the checkpointed one %s: the process started again", tok, token)
			}
		})
	}
}

// ownNetnsRefusal is how an engine refuses to restore a container with a
// network namespace of its own, or "" where it restores it. Engine 28
// joins the task to its network at creation through /proc/PID/ns/net,
// and a task created from a checkpoint has no PID before it starts
// (containerd/containerd#12141). 20.10 and 26.1 restore it.
func ownNetnsRefusal(version string) string {
	major, _ := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
	if major >= 28 {
		return "bind-mount /proc/0/ns/net"
	}
	return ""
}

// counterState parses what the counter wrote: its token and count.
func counterState(s string) (token string, n int, err error) {
	tok, count, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return "", 0, fmt.Errorf("counter wrote %q", s)
	}
	n, err = strconv.Atoi(count)
	return tok, n, err
}

// stoppedFile reads a file of a container that is not running, through
// the archive `docker cp` writes.
func stoppedFile(t *testing.T, h *harness.Host, name, path string) string {
	t.Helper()
	r := h.Docker(harness.Ctx(t), "cp", name+":"+path, "-")
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	tr := tar.NewReader(strings.NewReader(r.Stdout))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s: no %s in the archive", h.Name, path)
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}
