package migrate_test

// Moves that overlap: two of one container (one is refused, whichever
// way they meet), two of different containers (both succeed), and a
// killed move whose holder this machine cannot see, finished once its
// lease expired.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/tests/harness"
)

// busyMessage is how a move kept out by another one starts its reason.
const busyMessage = "is being moved by another docker migrate (pid "

// migrateCmd starts `docker migrate ARGS...` on h1's context in its own
// process group, with env added to its environment; done gets its end.
// The test's end kills what is left of it.
func migrateCmd(t *testing.T, env2 []string, args ...string) (<-chan error, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command("docker", append([]string{"--context", env.Hosts[0].Context, "migrate"}, args...)...)
	cmd.Env = append(append(os.Environ(), "DOCKER_CONFIG="+env.DockerConfig), env2...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	return done, out
}

// gatedHook is a pre-restore hook that touches mark, then waits until
// every one of gates exists.
func gatedHook(mark string, gates ...string) string {
	var conds []string
	for _, g := range gates {
		conds = append(conds, "[ -e "+g+" ]")
	}
	return fmt.Sprintf("touch %s; until %s; do sleep 0.1; done", mark, strings.Join(conds, " && "))
}

func exists(path string) error {
	_, err := os.Stat(path)
	return err
}

// ended waits for a command started by migrateCmd.
func ended(t *testing.T, what string, done <-chan error, out *bytes.Buffer) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(3 * time.Minute):
		t.Fatalf("%s did not end:\n%s", what, out.String())
	}
	return nil
}

// moveRecords lists the move record volumes of container ctr on h, with
// their record JSON.
func moveRecords(t *testing.T, h *harness.Host, ctr string) map[string]map[string]any {
	t.Helper()
	id := h.MustDocker(t, "inspect", "-f", "{{.Id}}", ctr)
	out := map[string]map[string]any{}
	for _, name := range strings.Fields(h.MustDocker(t, "volume", "ls", "-q", "--filter", "label=com.docker.migrate.move="+id)) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(h.MustDocker(t, "volume", "inspect", "-f", `{{index .Labels "com.docker.migrate.record"}}`, name)), &rec); err != nil {
			t.Fatalf("record %s: %v", name, err)
		}
		out[name] = rec
	}
	return out
}

// movedOnce asserts that web runs on h2 only, with its data, and that the
// source keeps one record of the move, finished, whose lease is released.
func movedOnce(t *testing.T, h1, h2 *harness.Host, web, sum string) {
	t.Helper()
	runsOnlyOn(t, h2, h1, web, sum)
	if r := env.Hosts[2].Docker(harness.Ctx(t), "inspect", web); r.Err == nil {
		t.Errorf("%s exists on h3", web)
	}
	recs := moveRecords(t, h1, web)
	if len(recs) != 1 {
		t.Fatalf("records of the move: %v", recs)
	}
	for name, rec := range recs {
		if rec["phase"] != "start" || rec["lease"] != nil {
			t.Errorf("record %s: %v", name, rec)
		}
	}
}

// The engines' volume create, given a name that exists, answers with the
// volume there and its labels, and keeps them: the record's
// compare-and-set relies on it. Its volumes have a CreatedAt and its info
// a SystemTime, the clock leases are measured on.
func TestVolumeCreateKeepsTheFirst(t *testing.T) {
	h1 := env.Hosts[0]
	api, err := client.New(client.WithHost(h1.DockerHost))
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	ctx := harness.Ctx(t)
	name := h1.Unique(t, "cas")
	t.Cleanup(func() { h1.Docker(harness.Ctx(t), "volume", "rm", "-f", name) })
	for _, v := range []string{"first", "second"} {
		r, err := api.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name, Driver: "local", Labels: map[string]string{"who": v}})
		if err != nil {
			t.Fatalf("create %s: %v", v, err)
		}
		if got := r.Volume.Labels["who"]; got != "first" {
			t.Fatalf("create %s answered labels %v", v, r.Volume.Labels)
		}
	}
	if got := h1.MustDocker(t, "volume", "inspect", "-f", "{{.Labels.who}}", name); got != "first" {
		t.Fatalf("labels after the second create: %s", got)
	}
	l, err := api.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("name", name)})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("list: %v, %v", l.Items, err)
	}
	created, err := time.Parse(time.RFC3339Nano, l.Items[0].CreatedAt)
	if err != nil {
		t.Fatalf("CreatedAt in the list: %q", l.Items[0].CreatedAt)
	}
	info, err := api.Info(ctx, client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now, err := time.Parse(time.RFC3339Nano, info.Info.SystemTime)
	if err != nil || now.Sub(created) < 0 || now.Sub(created) > time.Minute {
		t.Fatalf("SystemTime %q, CreatedAt %v", info.Info.SystemTime, created)
	}
}

// A second move of a container is refused while the first runs, and so
// is a rollback; the first finishes, the container moved once.
func TestSecondMoveRefusedWhileOneRuns(t *testing.T) {
	h1, h2, h3 := env.Hosts[0], env.Hosts[1], env.Hosts[2]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	dir := t.TempDir()
	mark, gate := filepath.Join(dir, "in-pre-restore"), filepath.Join(dir, "go-on")
	done, out := migrateCmd(t, nil, web, "--to", h2.Context, "--hook-pre-restore", gatedHook(mark, gate))
	harness.Eventually(t, time.Minute, "the first move reaches its pre-restore hook", func() error { return exists(mark) })

	for _, args := range [][]string{{web, "--to", h2.Context}, {web, "--to", h3.Context}, {"rollback", web}} {
		r := migrate(t, args...)
		if r.Err == nil || !strings.Contains(r.Combined(), web+" "+busyMessage) || !strings.Contains(r.Combined(), "run this again after") {
			t.Fatalf("migrate %v while a move runs: %v\n%s", args, r.Err, r.Combined())
		}
		t.Logf("migrate %v: %s", args, strings.TrimSpace(r.Combined()))
		if args[0] == "rollback" && !strings.Contains(r.Combined(), "--force") {
			t.Errorf("the refused rollback does not name --force: %s", r.Combined())
		}
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, "the first move", done, out); err != nil {
		t.Fatalf("the first move: %v\n%s", err, out.String())
	}
	movedOnce(t, h1, h2, web, sum)
}

// `rollback --force` while a move runs takes the move over: the source
// runs again, and the overridden move stops at its next renewal, having
// found the move taken or its record removed, without undoing anything
// itself or making the record again.
func TestRollbackForceTakesTheMove(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	dir := t.TempDir()
	mark, gate := filepath.Join(dir, "in-pre-restore"), filepath.Join(dir, "never")
	done, out := migrateCmd(t, []string{"CARGO_MOVE_LEASE=2s"}, web, "--to", h2.Context, "--hook-pre-restore", gatedHook(mark, gate))
	harness.Eventually(t, time.Minute, "the move reaches its pre-restore hook", func() error { return exists(mark) })
	r := migrate(t, "rollback", "--force", web)
	if r.Err != nil || !strings.Contains(r.Stdout, web+" runs on "+h1.Context+" again") {
		t.Fatalf("rollback --force: %v\n%s", r.Err, r.Combined())
	}
	if err := ended(t, "the overridden move", done, out); err == nil || !strings.Contains(out.String(), "this run stops here and leaves") ||
		strings.Contains(out.String(), "rolled back") {
		t.Fatalf("the overridden move: %v\n%s", err, out.String())
	}
	t.Logf("the overridden move: %s", strings.TrimSpace(out.String()))
	rolledBack(t, h1, h2, web, vol, sum)
	if recs := moveRecords(t, h1, web); len(recs) != 0 {
		t.Fatalf("records left: %v", recs)
	}
}

// Two moves of a container that both found no record (the second started
// before the first recorded anything): the one that records second finds
// the first's record, and stops before it changed anything.
func TestSecondMoveLosesTheRecord(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	dir := t.TempDir()
	fp := filepath.Join(dir, "failpoints")
	if err := os.WriteFile(fp, []byte("migrate.after-image=pause\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The late move: its check done, it waits after its image phase.
	lateDone, lateOut := migrateCmd(t, []string{failpoint.FileEnv + "=" + fp}, web, "--to", h2.Context, "--progress", "json")
	harness.Eventually(t, time.Minute, "the late move passes its check", func() error {
		if !strings.Contains(lateOut.String(), `"phase":"image"`) {
			return errors.New("not yet")
		}
		return nil
	})
	if r := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", web); r != "true" {
		t.Fatal("the late move touched the source before it held the move")
	}
	mark, gate := filepath.Join(dir, "in-pre-restore"), filepath.Join(dir, "go-on")
	done, out := migrateCmd(t, nil, web, "--to", h2.Context, "--hook-pre-restore", gatedHook(mark, gate))
	harness.Eventually(t, time.Minute, "the first move reaches its pre-restore hook", func() error { return exists(mark) })

	if err := os.WriteFile(fp, []byte("migrate.after-image=off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// It stops where it would record the move, before the source's stop.
	if err := ended(t, "the late move", lateDone, lateOut); err == nil || !strings.Contains(lateOut.String(), "stop: "+web+" "+busyMessage) ||
		strings.Contains(lateOut.String(), "rolled back") {
		t.Fatalf("the late move: %v\n%s", err, lateOut.String())
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, "the first move", done, out); err != nil {
		t.Fatalf("the first move: %v\n%s", err, out.String())
	}
	movedOnce(t, h1, h2, web, sum)
}

// Moves of two containers between the same hosts at the same time both
// succeed: each, in its own parallel subtest, waits in its pre-restore
// hook until the other is there too.
func TestMovesOfTwoContainersAtOnce(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	dir := t.TempDir()
	names := []string{"a", "b"}
	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			web, vol, sum := startApp(t, h1)
			cleanupMove(t, h1, h2, web, vol)
			done, out := migrateCmd(t, nil, web, "--to", h2.Context, "--hook-pre-restore",
				gatedHook(filepath.Join(dir, name), filepath.Join(dir, names[1-i])))
			if err := ended(t, "the move of "+web, done, out); err != nil {
				t.Fatalf("the move of %s: %v\n%s", web, err, out.String())
			}
			movedOnce(t, h1, h2, web, sum)
		})
	}
}

// A move killed where this machine cannot tell its process is gone (in
// another PID namespace, as on another machine or in a container) keeps
// a rerun out until its lease expires; the rerun then finishes it.
func TestKilledMoveFinishedOnceItsLeaseExpires(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web, vol, sum := startApp(t, h1)
	cleanupMove(t, h1, h2, web, vol)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--pid", "--fork", "--mount-proc",
		"docker", "--context", h1.Context, "migrate", web, "--to", h2.Context)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+env.DockerConfig, failpoint.Env+"=migrate.after-volumes=kill", "CARGO_MOVE_LEASE=4s")
	b, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || strings.Contains(string(b), "rolled back") {
		t.Fatalf("the move was not killed after its volumes phase: %v\n%s", err, b)
	}
	killed := time.Now()
	r := migrate(t, web, "--to", h2.Context)
	if r.Err == nil || !strings.Contains(r.Combined(), web+" "+busyMessage) {
		t.Fatalf("a rerun at once: %v\n%s", r.Err, r.Combined())
	}
	t.Logf("a rerun at once: %s", strings.TrimSpace(r.Combined()))
	harness.Eventually(t, time.Minute, "a rerun finishes the move", func() error {
		r := migrate(t, web, "--to", h2.Context)
		if r.Err != nil && !strings.Contains(r.Combined(), busyMessage) {
			t.Fatalf("the rerun failed: %v\n%s", r.Err, r.Combined())
		}
		return r.Err
	})
	if d := time.Since(killed); d < 3*time.Second {
		t.Errorf("the rerun took the move %v after the kill, within its 4 s lease", d)
	}
	movedOnce(t, h1, h2, web, sum)
}
