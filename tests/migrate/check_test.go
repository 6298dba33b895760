// Package migrate_test runs `docker migrate` against real engines.
package migrate_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/tests/harness"
)

var env *harness.Env

func TestMain(m *testing.M) {
	harness.Main(m, harness.Options{Prefix: "cgmig", Hosts: 3}, &env)
}

// migrate runs `docker migrate ARGS...` with h1 as the current context.
func migrate(t *testing.T, args ...string) harness.Result {
	t.Helper()
	return migrateOn(t, env.Hosts[0], args...)
}

// migrateOn runs `docker migrate ARGS...` with h's context current.
func migrateOn(t *testing.T, h *harness.Host, args ...string) harness.Result {
	t.Helper()
	return env.Docker(harness.Ctx(t), append([]string{"--context", h.Context, "migrate"}, args...)...)
}

// jsonLines decodes `--format json` output of a list: one object per
// line, as `docker ps --format json` prints.
func jsonLines(out string) ([]map[string]any, error) {
	var rows []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var row map[string]any
		if err := dec.Decode(&row); err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// `docker migrate check` reports every check and changes nothing; each
// thing that stops a move fails it with a message saying what to do.
func TestCheck(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	vol, web := h1.Unique(t, "v"), h1.Unique(t, "web")
	h1.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	h1.MustDocker(t, "run", "-d", "--name", web, "-v", vol+":/data", "--tmpfs", "/scratch", env.Image, "sleep", "3600")

	r := migrate(t, "check", web, "--to", h2.Context)
	if r.Err != nil {
		t.Fatalf("check of a movable container: %v\n%s", r.Err, r.Stdout)
	}
	for _, want := range []string{"cargo plugin on target", "/data", "federate", "/scratch", "recreate"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.Stdout)
		}
	}
	var rep struct {
		Container string
		Checks    []struct {
			Name string
			OK   bool
		}
		Mounts []struct{ Destination, Action string }
	}
	if err := json.Unmarshal([]byte(migrate(t, "check", web, "--to", h2.Context, "--format", "json").Stdout), &rep); err != nil || rep.Container != web || len(rep.Checks) < 8 || len(rep.Mounts) != 2 {
		t.Fatalf("json report: %v %+v", err, rep)
	}
	if got := h1.MustDocker(t, "inspect", "-f", "{{.State.Running}}", web); got != "true" {
		t.Fatal("check changed the container")
	}

	fails := []struct {
		name   string
		setup  func(t *testing.T) (args []string)
		expect []string
	}{
		{"bind mount", func(t *testing.T) []string {
			c := h1.Unique(t, "bind")
			h1.MustDocker(t, "create", "--name", c, "-v", "/etc:/host-etc:ro", env.Image, "true")
			return []string{"check", c, "--to", h2.Context}
		}, []string{"bind mount /etc:/host-etc cannot move", "--skip-bind-mounts"}},
		{"name taken on target", func(t *testing.T) []string {
			h2.MustDocker(t, "create", "--name", web, env.Image, "true")
			t.Cleanup(func() { h2.Docker(harness.Ctx(t), "rm", "-f", web) })
			return []string{"check", web, "--to", h2.Context}
		}, []string{"already has a container named"}},
		{"plugin disabled on target", func(t *testing.T) []string {
			h2.MustDocker(t, "plugin", "disable", "-f", "cargo:latest")
			t.Cleanup(func() { h2.MustDocker(t, "plugin", "enable", "cargo:latest") })
			return []string{"check", web, "--to", h2.Context}
		}, []string{"plugin enable cargo:latest"}},
		{"target unreachable", func(t *testing.T) []string {
			env.Docker(harness.Ctx(t), "context", "create", "t-nowhere", "--docker", "host=unix:///run/cargo-test-nowhere.sock")
			t.Cleanup(func() { env.Docker(harness.Ctx(t), "context", "rm", "-f", "t-nowhere") })
			return []string{"check", web, "--to", "t-nowhere"}
		}, []string{`cannot reach the engine of docker context "t-nowhere"`}},
		{"no such context", func(*testing.T) []string {
			return []string{"check", web, "--to", "t-missing"}
		}, []string{`docker context "t-missing" not found`}},
		{"no such container", func(*testing.T) []string {
			return []string{"check", "t-no-such-container", "--to", h2.Context}
		}, []string{`no container "t-no-such-container"`}},
		{"--to is required", func(*testing.T) []string { return []string{"check", web} }, []string{`"to" not set`}},
	}
	for _, tt := range fails {
		t.Run(tt.name, func(t *testing.T) {
			r := migrate(t, tt.setup(t)...)
			if r.Err == nil {
				t.Fatalf("check passed:\n%s", r.Stdout)
			}
			for _, want := range tt.expect {
				if !strings.Contains(r.Combined(), want) {
					t.Errorf("output lacks %q:\n%s", want, r.Combined())
				}
			}
		})
	}

	t.Run("bind mount skipped", func(t *testing.T) {
		c := h1.Unique(t, "bind")
		h1.MustDocker(t, "create", "--name", c, "-v", "/etc:/host-etc:ro", env.Image, "true")
		if r := migrate(t, "check", c, "--to", h2.Context, "--skip-bind-mounts"); r.Err != nil || !strings.Contains(r.Stdout, "skip") {
			t.Fatalf("%v\n%s", r.Err, r.Combined())
		}
	})
	t.Run("image only on the source", func(t *testing.T) {
		img := "t-only-on-h1:1"
		h1.MustDocker(t, "commit", web, img)
		t.Cleanup(func() { h1.Docker(harness.Ctx(t), "rmi", "-f", img) })
		c := h1.Unique(t, "img")
		h1.MustDocker(t, "create", "--name", c, img, "true")
		if r := migrate(t, "check", c, "--to", h2.Context); r.Err != nil || !strings.Contains(r.Stdout, "will be copied from "+h1.Context) {
			t.Fatalf("%v\n%s", r.Err, r.Combined())
		}
	})
}
