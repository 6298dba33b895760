package migrate_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/tests/harness"
)

// `docker migrate drain` empties h1 onto h2 and h3, three moves at once:
// ten containers, running and stopped, two sharing a network (they land
// together), two sharing a volume and one whose name both targets use
// (the plan says why they cannot move, and they stay on h1 untouched).
// --dry-run changes nothing; the drain exits non-zero, and the moves
// that succeeded stay done.
func TestDrain(t *testing.T) {
	h1, h2, h3 := env.Hosts[0], env.Hosts[1], env.Hosts[2]
	if out := h1.MustDocker(t, "ps", "-aq"); out != "" {
		t.Fatalf("h1 has containers left by other tests, which a drain would move too:\n%s", h1.MustDocker(t, "ps", "-a"))
	}
	name := map[string]string{}
	for _, s := range []string{"n1", "n2", "s1", "s2", "taken", "r1", "r2", "r3", "x1", "x2"} {
		name[s] = h1.Unique(t, s)
		h2.Unique(t, s)
		h3.Unique(t, s)
	}
	net, shared, own := h1.Unique(t, "net"), h1.Unique(t, "shared"), h1.Unique(t, "own")
	sleep := []string{env.Image, "sleep", "3600"}
	h1.MustDocker(t, "network", "create", net)
	h1.MustDocker(t, "volume", "create", "-d", "cargo", shared)
	h1.MustDocker(t, "volume", "create", "-d", "cargo", own)
	h1.Run(t, "-v", own+":/data", env.Image, "sh", "-c", "echo drained > /data/hello")
	run := func(s string, args ...string) {
		h1.MustDocker(t, append(append([]string{"run", "-d", "--name", name[s], "--stop-timeout", "1"}, args...), sleep...)...)
	}
	run("n1", "--network", net)
	run("n2", "--network", net)
	run("s1", "-v", shared+":/data")
	h1.MustDocker(t, "create", "--name", name["s2"], "-v", shared+":/data", env.Image, "true")
	run("taken")
	run("r1", "-v", own+":/data")
	run("r2")
	run("r3")
	h1.MustDocker(t, "create", "--name", name["x1"], env.Image, "true")
	h1.MustDocker(t, "run", "--name", name["x2"], env.Image, "true")
	for _, h := range []*harness.Host{h2, h3} {
		h.MustDocker(t, "create", "--name", name["taken"], env.Image, "true")
	}
	// Runs first: what the moves made on the targets, and the exports
	// left on h1, go before the containers and volumes Unique removes.
	t.Cleanup(func() {
		ctx := harness.Ctx(t)
		for _, h := range []*harness.Host{h2, h3} {
			for _, n := range name {
				h.Docker(ctx, "rm", "-f", n)
			}
			h.Docker(ctx, "volume", "rm", "-f", own, shared)
			h.Docker(ctx, "network", "rm", net)
		}
		h1.Docker(ctx, "volume", "rm", "-f", own+".cargo-export", shared+".cargo-export")
		for _, n := range name {
			h1.Docker(ctx, "rm", "-f", n)
		}
		h1.Docker(ctx, "network", "rm", net)
	})
	startedAt := func(s string) string {
		return h1.MustDocker(t, "inspect", "-f", "{{.State.Status}} {{.State.StartedAt}}", name[s])
	}
	before := map[string]string{}
	for s := range name {
		before[s] = startedAt(s)
	}
	to := h2.Context + "," + h3.Context

	// The plan: one JSON object per container.
	r := migrate(t, "drain", h1.Context, "--to", to, "--parallel", "3", "--dry-run", "--format", "json")
	if r.Err == nil || !strings.Contains(r.Stderr, "3 of 10 container(s) of "+h1.Context+" cannot move") {
		t.Fatalf("dry run: %v\n%s", r.Err, r.Combined())
	}
	rows, err := jsonLines(r.Stdout)
	if err != nil || len(rows) != 10 {
		t.Fatalf("plan: %v, %d rows\n%s", err, len(rows), r.Stdout)
	}
	plan := map[string]map[string]any{}
	for _, row := range rows {
		plan[row["container"].(string)] = row
	}
	for s, n := range name {
		p := plan[n]
		if p == nil {
			t.Fatalf("the plan lacks %s:\n%s", n, r.Stdout)
		}
		wantOK := s != "s1" && s != "s2" && s != "taken"
		if p["ok"] != wantOK {
			t.Errorf("%s: planned %v, want ok %v", n, p, wantOK)
		}
	}
	if plan[name["n1"]]["target"] != plan[name["n2"]]["target"] || plan[name["n1"]]["group"] != plan[name["n2"]]["group"] {
		t.Errorf("the containers sharing network %s are planned apart: %v / %v", net, plan[name["n1"]], plan[name["n2"]])
	}
	if e, _ := plan[name["taken"]]["error"].(string); !strings.Contains(e, "on "+h2.Context+": ") || !strings.Contains(e, "on "+h3.Context+": ") || !strings.Contains(e, "already has a container named") {
		t.Errorf("the plan does not say the name is taken on both targets: %q", e)
	}
	if e, _ := plan[name["s1"]]["error"].(string); !strings.Contains(e, "share volume(s) "+shared) || plan[name["s2"]]["error"] != e {
		t.Errorf("the plan does not say s1 and s2 share a volume: %q / %v", e, plan[name["s2"]]["error"])
	}
	for s := range name {
		if got := startedAt(s); got != before[s] {
			t.Errorf("the dry run changed %s: %s, was %s", name[s], got, before[s])
		}
		for _, h := range []*harness.Host{h2, h3} {
			if s != "taken" && h.Docker(harness.Ctx(t), "inspect", name[s]).Err == nil {
				t.Errorf("the dry run made %s on %s", name[s], h.Name)
			}
		}
	}

	// The drain: the plan's table, a line per phase, the summary. One of
	// the seven moves, whichever gets there first, fails after its
	// create on the target, and is rolled back.
	t.Setenv(failpoint.Env, "migrate.after-create=1*error")
	r = migrate(t, "drain", h1.Context, "--to", to, "--parallel", "3")
	t.Logf("drain:\n%s", r.Combined())
	if r.Err == nil || !strings.Contains(r.Stderr, " of 10 container(s) of "+h1.Context+" did not move") {
		t.Fatalf("drain: %v\n%s", r.Err, r.Combined())
	}
	i := strings.LastIndex(r.Stdout, "\nCONTAINER ")
	if i < 0 || !strings.Contains(r.Stdout[i:], "RESULT") {
		t.Fatalf("no summary:\n%s", r.Stdout)
	}
	summary := r.Stdout[i+1:]
	target := map[string]*harness.Host{}
	var rolledBack, notStarted []string
	for _, line := range strings.Split(summary, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		for s, n := range name {
			if f[0] != n {
				continue
			}
			switch {
			case s == "s1" || s == "s2" || s == "taken":
				if f[2] != "failed" {
					t.Errorf("%s: %q, want failed", n, line)
				}
			case f[2] == "failed" && strings.Contains(line, "failure injected") && strings.Contains(line, "rolled back"):
				rolledBack = append(rolledBack, s)
			case f[2] == "not" && strings.Contains(line, "of its group failed"):
				notStarted = append(notStarted, s)
			case f[2] != "moved":
				t.Errorf("%s: %q, want moved", n, line)
			case f[1] == h2.Context:
				target[s] = h2
			case f[1] == h3.Context:
				target[s] = h3
			}
		}
	}
	if !strings.Contains(summary, "already has a container named") {
		t.Errorf("the summary does not say why %s failed:\n%s", name["taken"], summary)
	}
	if len(rolledBack) != 1 {
		t.Fatalf("moves rolled back: %v, want one:\n%s", rolledBack, summary)
	}
	// A failed move of the first of the pair leaves the second where it
	// is, with it.
	if rb := rolledBack[0]; rb == "n1" && !slices.Equal(notStarted, []string{"n2"}) || rb != "n1" && len(notStarted) > 0 {
		t.Errorf("%s failed and %v did not start:\n%s", rb, notStarted, summary)
	}
	if want := 7 - 1 - len(notStarted); len(target) != want {
		t.Fatalf("%d containers moved, want %d:\n%s", len(target), want, summary)
	}
	for _, s := range append(rolledBack, notStarted...) {
		if got, was := startedAt(s), before[s]; strings.Fields(got)[0] != strings.Fields(was)[0] {
			t.Errorf("%s is %s on h1 after its move failed, was %s", name[s], got, was)
		}
		for _, h := range []*harness.Host{h2, h3} {
			if h.Docker(harness.Ctx(t), "inspect", name[s]).Err == nil {
				t.Errorf("%s, whose move failed, is left on %s", name[s], h.Name)
			}
		}
	}
	var used []string
	for s, h := range target {
		if !slices.Contains(used, h.Name) {
			used = append(used, h.Name)
		}
		state := h.MustDocker(t, "inspect", "-f", "{{.State.Running}}", name[s])
		wasRunning := strings.HasPrefix(before[s], "running")
		if state != map[bool]string{true: "true", false: "false"}[wasRunning] {
			t.Errorf("%s on %s: running %s, was %s on h1", name[s], h.Name, state, before[s])
		}
		if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", name[s]); got != "false" {
			t.Errorf("%s still runs on h1", name[s])
		}
	}
	if len(used) != 2 {
		t.Errorf("the moves went to %v only, not spread over both targets", used)
	}
	if target["n1"] != target["n2"] && len(notStarted) == 0 && rolledBack[0] != "n2" {
		t.Errorf("the containers sharing network %s landed apart: %s and %s", net, target["n1"].Name, target["n2"].Name)
	}
	if rolledBack[0] != "r1" {
		if got := target["r1"].MustDocker(t, "exec", name["r1"], "cat", "/data/hello"); got != "drained" {
			t.Errorf("r1's volume on %s: %q", target["r1"].Name, got)
		}
	}
	for _, s := range []string{"s1", "s2", "taken"} {
		if got := startedAt(s); got != before[s] {
			t.Errorf("%s, which could not move, changed on h1: %s, was %s", name[s], got, before[s])
		}
	}
	if got := h1.MustDocker(t, "volume", "ls", "-q", "--filter", "name="+shared+".cargo-export"); got != "" {
		t.Errorf("the shared volume was exported: %s", got)
	}
}

// Ctrl-C during a drain starts no new move and rolls back those running,
// as it does a single move: every container runs on h1 again.
func TestDrainInterrupted(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	if out := h1.MustDocker(t, "ps", "-aq"); out != "" {
		t.Fatalf("h1 has containers left by other tests, which a drain would move too:\n%s", h1.MustDocker(t, "ps", "-a"))
	}
	var names []string
	for _, s := range []string{"a", "b", "c", "d"} {
		n := h1.Unique(t, s)
		h2.Unique(t, s)
		h1.MustDocker(t, "run", "-d", "--name", n, "--stop-timeout", "1", env.Image, "sleep", "3600")
		names = append(names, n)
	}
	// Every move pauses once its container is stopped.
	points := filepath.Join(t.TempDir(), "failpoints")
	if err := os.WriteFile(points, []byte("migrate.after-stop=pause\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// In a process group of its own, as a terminal runs it: Ctrl-C
	// reaches the docker CLI and the plugin both.
	cmd := exec.Command("docker", "--context", h1.Context, "migrate", "drain", h1.Context, "--to", h2.Context, "--parallel", "2")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+env.DockerConfig, failpoint.FileEnv+"="+points)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	stopped := func() int {
		n := 0
		for _, c := range names {
			if h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", c) == "false" {
				n++
			}
		}
		return n
	}
	harness.Eventually(t, time.Minute, "two moves paused after their stop", func() error {
		if n := stopped(); n != 2 {
			return fmt.Errorf("%d containers stopped:\n%s", n, out.String())
		}
		return nil
	})
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(points, []byte("migrate.after-stop=off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, "the interrupted drain", done, out); err == nil {
		t.Fatalf("the interrupted drain succeeded:\n%s", out.String())
	}
	t.Logf("drain:\n%s", out.String())
	if got := strings.Count(out.String(), "rolled back: "); got != 2 {
		t.Errorf("%d moves rolled back, want 2:\n%s", got, out.String())
	}
	if got := strings.Count(out.String(), "the drain was interrupted before this move started"); got != 2 {
		t.Errorf("%d moves not started, want 2:\n%s", got, out.String())
	}
	for _, c := range names {
		if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", c); got != "true" {
			t.Errorf("%s does not run on h1 after the interrupted drain", c)
		}
		if h2.Docker(harness.Ctx(t), "inspect", c).Err == nil {
			t.Errorf("%s is left on h2", c)
		}
	}
}
