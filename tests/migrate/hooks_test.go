package migrate_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// Hooks run around the restore with the move's facts in their
// environment; a failing pre-restore hook rolls the move back and runs
// the failed-restore hook.
func TestMoveHooks(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, _ := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	dir := t.TempDir()
	record := func(name string) string {
		return fmt.Sprintf(`echo "$CARGO_HOOK $CARGO_CONTAINER $CARGO_SOURCE $CARGO_TARGET $CARGO_ERROR" > %s/%s`, dir, name)
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b))
	}

	r := migrate(t, web, "--to", h2.Context, "--hook-pre-restore", record("pre")+"; exit 7",
		"--hook-failed-restore", record("failed"))
	if r.Err == nil || !strings.Contains(r.Combined(), "exit status 7") || !strings.Contains(r.Combined(), "rolled back") {
		t.Fatalf("migrate with a failing pre-restore hook: %v\n%s", r.Err, r.Combined())
	}
	if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", web); got != "true" {
		t.Fatal("the source does not run after the rollback")
	}
	if got, want := read("pre"), fmt.Sprintf("pre-restore %s %s %s", web, h1.Context, h2.Context); got != want {
		t.Errorf("pre-restore hook saw %q, want %q", got, want)
	}
	if got := read("failed"); !strings.HasPrefix(got, fmt.Sprintf("failed-restore %s %s %s ", web, h1.Context, h2.Context)) || !strings.Contains(got, "exit status 7") {
		t.Errorf("failed-restore hook saw %q", got)
	}

	r = migrate(t, web, "--to", h2.Context, "--hook-pre-restore", record("pre2"), "--hook-post-restore", record("post"))
	if r.Err != nil {
		t.Fatalf("migrate: %v\n%s", r.Err, r.Combined())
	}
	if read("pre2") == "" || !strings.HasPrefix(read("post"), "post-restore "+web) {
		t.Errorf("hooks: pre %q, post %q", read("pre2"), read("post"))
	}
}

// Ctrl-C in the middle of a move rolls it back: the source runs again
// with its data, and the target keeps nothing.
func TestMoveInterrupted(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cmd, done, out := moveUntilPreRestore(t, web, h1, h2)
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("the interrupted move succeeded:\n%s", out.String())
		}
	case <-time.After(2 * time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("the interrupted move did not end:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "rolled back") {
		t.Errorf("no rollback reported:\n%s", out.String())
	}
	rolledBack(t, h1, h2, web, vol, sum)
}

// moveUntilPreRestore starts a move of web from h1 to h2 in its own
// process group, as a terminal runs it, and returns once the move waits
// in its pre-restore hook; done gets the move's end, out its output.
func moveUntilPreRestore(t *testing.T, web string, h1, h2 *harness.Host) (*exec.Cmd, <-chan error, *bytes.Buffer) {
	t.Helper()
	mark := filepath.Join(t.TempDir(), "in-pre-restore")
	cmd := exec.Command("docker", "--context", h1.Context, "migrate", web, "--to", h2.Context,
		"--hook-pre-restore", "touch "+mark+"; sleep 120")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+env.DockerConfig)
	// A terminal's Ctrl-C reaches the whole foreground process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	harness.Eventually(t, time.Minute, "the move reaches its pre-restore hook", func() error {
		_, err := os.Stat(mark)
		return err
	})
	return cmd, done, out
}
