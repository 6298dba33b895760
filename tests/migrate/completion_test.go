package migrate_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// complete asks the plugin what to offer, as the docker CLI does for
// `docker migrate ARGS<TAB>`: `docker-migrate __complete migrate ARGS`,
// the current context h's. It returns the offers and cobra's directive.
func complete(t *testing.T, h *harness.Host, args ...string) (offers []string, directive string) {
	t.Helper()
	bin := filepath.Join(env.DockerConfig, "cli-plugins", "docker-migrate")
	cmd := exec.CommandContext(harness.Ctx(t), bin, append([]string{"__complete", "migrate"}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+env.DockerConfig, "DOCKER_CONTEXT="+h.Context)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("completing %q: %v\n%s", args, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, l := range lines[:len(lines)-1] {
		offers = append(offers, strings.SplitN(l, "\t", 2)[0])
	}
	return offers, lines[len(lines)-1]
}

// docker migrate <TAB> offers the current context's containers, running
// or stopped; --to <TAB> the other contexts; status, failover and
// rollback their containers.
func TestCompletion(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	running, stopped := h1.Unique(t, "running"), h1.Unique(t, "stopped")
	h1.MustDocker(t, "run", "-d", "--name", running, env.Image, "sleep", "3600")
	h1.MustDocker(t, "create", "--name", stopped, env.Image, "true")
	other := h2.Unique(t, "elsewhere")
	h2.MustDocker(t, "create", "--name", other, env.Image, "true")
	t.Cleanup(func() {
		h1.Docker(harness.Ctx(t), "rm", "-f", running, stopped)
		h2.Docker(harness.Ctx(t), "rm", "-f", other)
	})

	has := func(what string, offers []string, want, not []string) {
		t.Helper()
		for _, w := range want {
			if !slices.Contains(offers, w) {
				t.Errorf("%s: %q not offered in %q", what, w, offers)
			}
		}
		for _, n := range not {
			if slices.Contains(offers, n) {
				t.Errorf("%s: %q offered in %q", what, n, offers)
			}
		}
	}
	offers, directive := complete(t, h1, "")
	has("docker migrate <TAB>", offers, []string{running, stopped, "check", "status", "failover", "rollback", "ls"}, []string{other})
	if directive != ":4" { // no file names
		t.Errorf("directive %s, want :4 (no files)", directive)
	}
	offers, _ = complete(t, h1, running, "")
	has("docker migrate CONTAINER <TAB>", offers, nil, []string{stopped, running})

	offers, _ = complete(t, h1, running, "--to", "")
	has("--to <TAB>", offers, []string{h2.Context, env.Hosts[2].Context}, []string{h1.Context})
	offers, _ = complete(t, h1, "check", running, "--to", "")
	has("check --to <TAB>", offers, []string{h2.Context}, []string{h1.Context})

	for _, cmd := range []string{"check", "failover", "rollback", "status"} {
		offers, _ = complete(t, h1, cmd, "")
		has(cmd+" <TAB>", offers, []string{running, stopped}, []string{other})
	}
	offers, _ = complete(t, h1, "status", running, "")
	has("status CONTAINER <TAB>", offers, []string{stopped}, []string{running})
	offers, _ = complete(t, h2, "failover", "")
	has("failover <TAB> on "+h2.Name, offers, []string{other}, []string{running})
}
