package volume_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// The plugin is pushed to a registry from one engine (`make push`) and
// installed on another with `docker plugin install`, replacing the plugin
// created there from the tree. Volumes made by the old plugin stay, with
// their data: the state lives outside the plugin.
func TestInstallFromRegistry(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	ref := env.Registry + "/cargo:e2e"
	vol := name(t, dst, "v")
	dst.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	run(t, dst, "-v", vol+":/data", env.Image, "sh", "-c", "echo survives > /data/f")

	push := exec.Command("make", "-C", env.Top, "push", "REGISTRY="+env.Registry, "PLUGIN_TAG=e2e", "BUILD="+env.Build)
	push.Env = append(os.Environ(), "DOCKER_CONFIG="+env.DockerConfig, "DOCKER_CONTEXT="+src.Context)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("make push: %v\n%s", err, out)
	}
	if r := src.Docker(harness.Ctx(t), "plugin", "inspect", ref); r.Err == nil {
		t.Fatal("make push left the pushed plugin installed on the build engine")
	}

	// -f: the engine counts the existing volume as a use of the plugin.
	dst.MustDocker(t, "plugin", "disable", "-f", "cargo:latest")
	dst.MustDocker(t, "plugin", "rm", "-f", "cargo:latest")
	dst.MustDocker(t, "plugin", "install", "--grant-all-permissions", "--alias", "cargo:latest", ref,
		"ADVERTISE_ADDR="+dst.Addr)

	if got := dst.MustDocker(t, "plugin", "inspect", "-f", "{{.Enabled}} {{.PluginReference}}", "cargo:latest"); got != "true "+ref {
		t.Fatalf("installed plugin: %q", got)
	}
	settings := dst.MustDocker(t, "plugin", "inspect", "-f", "{{json .Settings.Env}}", "cargo:latest")
	if !strings.Contains(settings, `"ADVERTISE_ADDR=`+dst.Addr+`"`) {
		t.Fatalf("settings: %s", settings)
	}
	if !strings.Contains(dst.EngineLog(), "advertise="+dst.Addr+":7450") {
		t.Fatal("the installed plugin did not start with the ADVERTISE_ADDR it was given")
	}
	if got := run(t, dst, "-v", vol+":/data", env.Image, "cat", "/data/f"); got != "survives" {
		t.Fatalf("data after reinstall: %q", got)
	}
	if !contains(volumeNames(t, dst), vol) {
		t.Fatal("volume lost in reinstall")
	}
}
