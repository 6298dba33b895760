package volume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/flags"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/dockerctx"
)

// The docker CLI finds and runs the plugin.
func TestCLIPlugin(t *testing.T) {
	meta, err := exec.Command(filepath.Join(env.Build, "docker-migrate"), "docker-cli-plugin-metadata").Output()
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ SchemaVersion, Vendor, Version, ShortDescription string }
	if err := json.Unmarshal(meta, &m); err != nil || m.SchemaVersion != "0.1.0" || m.Vendor != "cargo" || m.Version == "" {
		t.Fatalf("metadata %s: %v", meta, err)
	}
	c := context.Background()
	help := env.Docker(c, "--help")
	if !strings.Contains(help.Stdout, "migrate*") || !strings.Contains(help.Stdout, m.ShortDescription) {
		t.Fatalf("docker --help does not list the plugin:\n%s", help.Stdout)
	}
	if r := env.Docker(c, "migrate", "--help"); r.Err != nil || !strings.Contains(r.Stdout, "docker migrate COMMAND") || !strings.Contains(r.Stdout, "version") {
		t.Fatalf("docker migrate --help: %v\n%s", r.Err, r.Stdout)
	}
	if r := env.Docker(c, "migrate", "version"); r.Err != nil || !strings.HasPrefix(r.Stdout, "docker-migrate "+m.Version+" (") {
		t.Fatalf("docker migrate version: %v %q", r.Err, r.Stdout)
	}
	r := env.Docker(c, "migrate", "version", "--format", "json")
	var v struct{ Version, GoVersion, OS, Arch string }
	if err := json.Unmarshal([]byte(r.Stdout), &v); err != nil || v.Version != m.Version || v.OS != "linux" {
		t.Fatalf("version --format json: %v %q", err, r.Stdout)
	}
	if r := env.Docker(c, "migrate", "version", "--format", "{{.Nope}}"); r.Err == nil {
		t.Fatal("a bad template was accepted")
	}
	if r := env.Docker(c, "migrate", "frobnicate"); r.Err == nil {
		t.Fatal("an unknown command was accepted")
	}
}

// lowerVersion returns the lower of two API versions such as "1.41" and "1.56".
func lowerVersion(a, b string) string {
	if versionLess(a, b) {
		return a
	}
	return b
}

func versionLess(a, b string) bool {
	var am, an, bm, bn int
	// An unparsable version reads as 0.0, the oldest.
	_, _ = fmt.Sscanf(a, "%d.%d", &am, &an)
	_, _ = fmt.Sscanf(b, "%d.%d", &bm, &bn)
	return am < bm || am == bm && an < bn
}

// dockerctx gives a client for any named context: each reaches its own
// engine, and a missing context is explained.
func TestClientForContext(t *testing.T) {
	config.SetDir(env.DockerConfig)
	t.Setenv("DOCKER_CONTEXT", env.Hosts[0].Context)
	cli, err := command.NewDockerCli()
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Initialize(flags.NewClientOptions()); err != nil {
		t.Fatal(err)
	}
	h2 := env.Hosts[1]
	vol := name(t, h2, "only-here")
	h2.MustDocker(t, "volume", "create", "-d", "cargo", vol)

	c := context.Background()
	has := func(ctxName string) bool {
		api, err := dockerctx.Client(cli, ctxName)
		if err != nil {
			t.Fatal(err)
		}
		ping, err := api.Ping(c, client.PingOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := api.VolumeList(c, client.VolumeListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Negotiation speaks the engine's own API version when it is older
		// than the client's (20.10 speaks 1.41).
		if want := lowerVersion(ping.APIVersion, client.MaxAPIVersion); api.ClientVersion() != want {
			t.Fatalf("client speaks API %s to an engine of API %s", api.ClientVersion(), ping.APIVersion)
		}
		for _, v := range l.Items {
			if v.Name == vol {
				return true
			}
		}
		return false
	}
	if !has(h2.Context) {
		t.Fatalf("context %s does not reach h2", h2.Context)
	}
	if has("") || has(env.Hosts[0].Context) {
		t.Fatal("the current context (h1) sees h2's volume")
	}
	_, err = dockerctx.Client(cli, "nowhere")
	if err == nil || !strings.Contains(err.Error(), `docker context "nowhere" not found`) || !strings.Contains(err.Error(), "docker context create") {
		t.Fatalf("missing context: %v", err)
	}
}
