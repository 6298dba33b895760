package migrate_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/tests/harness"
)

// migrateKilledAfter runs a move of web to h2 whose CLI kills itself
// (SIGKILL: no handler runs, nothing is rolled back) once phase is done.
func migrateKilledAfter(t *testing.T, web string, h2 *harness.Host, phase string) {
	t.Helper()
	os.Setenv(failpoint.Env, "migrate.after-"+phase+"=kill")
	r := migrate(t, web, "--to", h2.Context)
	os.Unsetenv(failpoint.Env)
	// The docker CLI exits 255 when its plugin dies of a signal.
	var exit *exec.ExitError
	if !errors.As(r.Err, &exit) || exit.ExitCode() != 255 && exit.ExitCode() != 137 || strings.Contains(r.Combined(), "rolled back") {
		t.Fatalf("the move was not killed after %s: %v\n%s", phase, r.Err, r.Combined())
	}
}

// runsOnlyOn asserts that web runs on on, with startApp's data, and does
// not run on off.
func runsOnlyOn(t *testing.T, on, off *harness.Host, web, sum string) {
	t.Helper()
	if got := on.MustDocker(t, "exec", web, "sh", "-c", "cat /data/hello; md5sum < /data/blob"); got != "hello\n"+sum {
		t.Fatalf("data on %s: %q", on.Name, got)
	}
	if r := off.Docker(harness.Ctx(t), "inspect", "-f", "{{.State.Running}}", web); r.Err == nil && strings.TrimSpace(r.Stdout) != "false" {
		t.Fatalf("%s runs on %s too", web, off.Name)
	}
}

// The CLI is SIGKILLed after each phase of a move. Running the same move
// again finishes it; `docker migrate rollback` on the source undoes it.
// Either way the container runs on exactly one host with its data, and
// the source's volumes are not left frozen.
func TestMoveKilledAfterEachPhase(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	for _, phase := range []string{"check", "image", "stop", "layer", "volumes", "create", "start"} {
		for _, way := range []string{"rerun", "rollback"} {
			t.Run(phase+"/"+way, func(t *testing.T) {
				web, vol, sum := startApp(t, h1)
				cleanupMove(t, h1, h2, web, vol)
				migrateKilledAfter(t, web, h2, phase)
				if way == "rerun" {
					r := migrate(t, web, "--to", h2.Context)
					if r.Err != nil {
						t.Fatalf("the rerun failed: %v\n%s", r.Err, r.Combined())
					}
					runsOnlyOn(t, h2, h1, web, sum)
					if got := h1.MustDocker(t, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", web); phase != "check" && phase != "image" && got != "no" {
						t.Errorf("the moved-out source may restart: its restart policy is %q", got)
					}
					if got := h2.MustDocker(t, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", web); got != "unless-stopped" {
						t.Errorf("restart policy on the target: %q", got)
					}
					return
				}
				r := migrate(t, "rollback", web)
				switch phase {
				case "check", "image":
					// Nothing was changed yet, and nothing was recorded.
					if r.Err == nil || !strings.Contains(r.Combined(), "nothing to roll back") {
						t.Fatalf("rollback: %v\n%s", r.Err, r.Combined())
					}
					runsOnlyOn(t, h1, h2, web, sum)
					return
				case "start":
					// It runs on the target: a plain rollback would lose
					// what it wrote there since.
					if r.Err == nil || !strings.Contains(r.Combined(), "--force") {
						t.Fatalf("rollback of a started move: %v\n%s", r.Err, r.Combined())
					}
					runsOnlyOn(t, h2, h1, web, sum)
					r = migrate(t, "rollback", "--force", web)
				}
				if r.Err != nil || !strings.Contains(r.Stdout, web+" runs on "+h1.Context+" again") {
					t.Fatalf("rollback: %v\n%s", r.Err, r.Combined())
				}
				rolledBack(t, h1, h2, web, vol, sum)
				if got := h1.MustDocker(t, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", web); got != "unless-stopped" {
					t.Errorf("restart policy after the rollback: %q", got)
				}
				if r := migrate(t, "rollback", web); r.Err == nil {
					t.Error("a second rollback found a move to undo")
				}
			})
		}
	}
}

// ls and status show an interrupted move and the two commands that
// finish or undo it.
func TestInterruptedMoveIsShown(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, _ := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	migrateKilledAfter(t, web, h2, "volumes")
	t.Cleanup(func() { migrate(t, "rollback", web) })
	finish := fmt.Sprintf("docker --context %s migrate %s --to %s", h1.Context, web, h2.Context)
	undo := fmt.Sprintf("docker --context %s migrate rollback %s", h1.Context, web)
	row := lsRow(t, h1.Context, web)
	if row["migration"] != "move interrupted" || row["to"] != h2.Context || row["progress"] != "after volumes" ||
		!strings.Contains(fmt.Sprint(row["next"]), finish) || !strings.Contains(fmt.Sprint(row["next"]), undo) {
		t.Fatalf("ls row: %v", row)
	}
	r := migrate(t, "status")
	if r.Err != nil || !strings.Contains(r.Stderr, finish) || !strings.Contains(r.Stderr, undo) {
		t.Fatalf("status: %v\n%s", r.Err, r.Combined())
	}
}

// A source container with --restart=always, stopped by a move that was
// then killed, does not start again when its engine restarts: it would
// run twice once the move finishes. A rollback gives it its policy back.
func TestRestartAlwaysSourceStaysStopped(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	for _, way := range []string{"rerun", "rollback"} {
		t.Run(way, func(t *testing.T) {
			web, vol := h1.Unique(t, "web"), h1.Unique(t, "v")
			cleanupMove(t, h1, h2, web, vol)
			sum := h1.Run(t, "-v", vol+":/data", env.Image, "sh", "-c",
				"head -c 1000000 /dev/urandom > /data/blob; echo hello > /data/hello; md5sum < /data/blob")
			h1.MustDocker(t, "run", "-d", "--name", web, "--restart", "always", "--stop-timeout", "1",
				"-v", vol+":/data", env.Image, "sh", "-c", "while true; do date >> /data/log; sleep 0.2; done")
			migrateKilledAfter(t, web, h2, "volumes")
			startedAt := h1.MustDocker(t, "inspect", "-f", "{{.State.StartedAt}}", web)
			h1.RestartEngine(t)
			// The engine starts its restart-policy containers before it
			// answers; give a late one the same chance.
			harness.Eventually(t, time.Minute, "the plugin is back", func() error {
				return h1.Docker(harness.Ctx(t), "volume", "inspect", vol).Err
			})
			if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", web); got != "false "+startedAt {
				t.Fatalf("the engine restart started the moved source again: %s (was started at %s)", got, startedAt)
			}
			if way == "rerun" {
				if r := migrate(t, web, "--to", h2.Context); r.Err != nil {
					t.Fatalf("the rerun failed: %v\n%s", r.Err, r.Combined())
				}
				runsOnlyOn(t, h2, h1, web, sum)
				if got := h2.MustDocker(t, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", web); got != "always" {
					t.Errorf("restart policy on the target: %q", got)
				}
				return
			}
			if r := migrate(t, "rollback", web); r.Err != nil {
				t.Fatalf("rollback: %v\n%s", r.Err, r.Combined())
			}
			runsOnlyOn(t, h1, h2, web, sum)
			if got := h1.MustDocker(t, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", web); got != "always" {
				t.Errorf("restart policy after the rollback: %q", got)
			}
		})
	}
}

// blackHole freezes h's engine: its socket still accepts connections, but
// nothing answers, as with a target behind a dead link.
func blackHole(t *testing.T, h *harness.Host) {
	t.Helper()
	pids := h.Processes(t, "dockerd")
	if len(pids) == 0 {
		t.Fatalf("no dockerd on %s", h.Name)
	}
	thaw := func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGSTOP); err != nil {
			thaw()
			t.Fatal(err)
		}
	}
}

// A rollback whose target does not answer restores the source first, on
// its own deadline, and says what is left on the target and how to
// remove it.
func TestRollbackWithTargetBlackHoled(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	migrateKilledAfter(t, web, h2, "create")
	blackHole(t, h2)
	r := migrate(t, "rollback", web)
	if r.Err != nil || !strings.Contains(r.Stdout, web+" runs on "+h1.Context+" again") ||
		!strings.Contains(r.Stderr, "docker --context "+h2.Context+" rm -f "+web) ||
		!strings.Contains(r.Stderr, "docker --context "+h2.Context+" volume rm -f "+vol) {
		t.Fatalf("rollback: %v\n%s", r.Err, r.Combined())
	}
	if got := h1.MustDocker(t, "exec", web, "sh", "-c", "cat /data/hello; md5sum < /data/blob"); got != "hello\n"+sum {
		t.Fatalf("source data after rollback: %q", got)
	}
	if st := h1.VolumeStatus(t, vol); st["state"] != "local" {
		t.Fatalf("source volume still frozen: %v", st)
	}
}

// Ctrl-C in the middle of a move whose target then stops answering: the
// move's own rollback restores the source first and does not wait for
// the target.
func TestInterruptWithTargetBlackHoled(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	cmd, done, out := moveUntilPreRestore(t, web, h1, h2)
	blackHole(t, h2)
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "rolled back: "+web+" runs on "+h1.Context+" again") {
			t.Fatalf("the interrupted move: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("the interrupted move did not end:\n%s", out.String())
	}
	if got := h1.MustDocker(t, "exec", web, "sh", "-c", "cat /data/hello; md5sum < /data/blob"); got != "hello\n"+sum {
		t.Fatalf("source data after rollback: %q", got)
	}
}
