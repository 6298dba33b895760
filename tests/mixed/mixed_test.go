// Package mixed_test moves containers between engines of different
// versions: h1 runs the machine's Engine 20.10, h2 Debian forky's 28.5,
// with the containerd image store when CARGO_CONTAINERD_STORE=1.
package mixed_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

var env *harness.Env

func TestMain(m *testing.M) {
	harness.Main(m, harness.Options{Prefix: "cgmix", Hosts: 2, Engines: []string{"machine", "forky"}}, &env)
}

// migrateOn runs `docker migrate ARGS...` with h's context current and
// returns each phase's detail.
func migrateOn(t *testing.T, h *harness.Host, args ...string) map[string]string {
	t.Helper()
	r := env.Docker(harness.Ctx(t), append([]string{"--context", h.Context, "migrate"}, append(args, "--format", "json")...)...)
	if r.Err != nil {
		t.Fatalf("migrate from %s: %v\n%s", h.Name, r.Err, r.Combined())
	}
	var res struct {
		Phases []struct{ Name, Detail string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("result: %v: %s", err, r.Stdout)
	}
	details := map[string]string{}
	for _, p := range res.Phases {
		details[p.Name] = p.Detail
	}
	return details
}

// waitComplete waits until the moved volume of ctr on h is copied.
func waitComplete(t *testing.T, h *harness.Host, ctr string) {
	t.Helper()
	harness.Eventually(t, 3*time.Minute, "the copy to "+h.Name+" completes", func() error {
		r := env.Docker(harness.Ctx(t), "--context", h.Context, "migrate", "status", ctr, "--format", "json")
		if r.Err != nil {
			return fmt.Errorf("status: %w: %s", r.Err, r.Combined())
		}
		var row struct{ State string }
		if err := json.Unmarshal([]byte(r.Stdout), &row); err != nil {
			return fmt.Errorf("status: %w: %s", err, r.Stdout)
		}
		if row.State != "complete" {
			return fmt.Errorf("state %q", row.State)
		}
		return nil
	})
}

// identity is what an image keeps across engines and image stores: its
// layers, platform and creation time (the ID is the configuration's
// digest on a classic store, the manifest's on the containerd store).
func identity(t *testing.T, h *harness.Host, ref string) string {
	t.Helper()
	return h.MustDocker(t, "image", "inspect", "-f", "{{json .RootFS.Layers}} {{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}} {{.Created}}", ref)
}

// running waits until name runs on h with its data and image file.
func running(t *testing.T, h *harness.Host, name, sum string) {
	t.Helper()
	harness.Eventually(t, time.Minute, name+" runs on "+h.Name, func() error {
		if got := h.MustDocker(t, "inspect", "-f", "{{.State.Running}}", name); got != "true" {
			return fmt.Errorf("running=%s", got)
		}
		return nil
	})
	if got := h.MustDocker(t, "exec", name, "sh", "-c", "cat /etc/which /data/hello; md5sum < /data/blob"); got != "source\nhello\n"+sum {
		t.Fatalf("%s on %s: %q", name, h.Name, got)
	}
}

// A container with a cargo volume and an image only its host has moves
// from Engine 20.10 to 28.5 and back, with its data, its image whole and
// the same, and its writable layer.
func TestMoveBetweenVersions(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	if v1, v2 := h1.Version(t), h2.Version(t); v1 == v2 {
		t.Fatalf("both hosts run Engine %s", v1)
	}
	web, vol := h1.Unique(t, "web"), h1.Unique(t, "v")
	ref := "cargo-test/" + h1.Unique(t, "img") + ":v1"
	base := h1.Unique(t, "base")
	h1.MustDocker(t, "run", "--name", base, env.Image, "sh", "-c", "echo source > /etc/which")
	h1.MustDocker(t, "commit", base, ref)
	t.Cleanup(func() {
		for _, h := range []*harness.Host{h1, h2} {
			h.Docker(harness.Ctx(t), "rm", "-f", web)
			h.Docker(harness.Ctx(t), "volume", "rm", "-f", vol, vol+".cargo-export")
			h.Docker(harness.Ctx(t), "image", "rm", "-f", ref)
		}
	})
	want := identity(t, h1, ref)
	h1.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	sum := h1.Run(t, "-v", vol+":/data", env.Image, "sh", "-c",
		"head -c 3000000 /dev/urandom > /data/blob; echo hello > /data/hello; md5sum < /data/blob")
	h1.MustDocker(t, "run", "-d", "--name", web, "--stop-timeout", "1", "-v", vol+":/data", ref,
		"sh", "-c", "echo changed > /etc/layer; while true; do date >> /data/log; sleep 0.2; done")

	// 20.10 to 28.5: h2 has busybox, so only the commit's layer goes to
	// a classic store; a containerd one keeps layers as the archive's
	// manifest names them (uncompressed, from a classic store), which
	// its own busybox is not, so it takes the whole image and says why.
	d := migrateOn(t, h1, web, "--to", h2.Context)
	wantSent := "1 of 2 layers sent"
	if h2.ContainerdStore(t) {
		wantSent = "all 2 layers sent (" + h2.Context + " keeps images in the containerd image store, " + h1.Context + " in a classic one"
	}
	if !strings.Contains(d["image"], wantSent) {
		t.Errorf("image phase to %s: %q, want %q", h2.Name, d["image"], wantSent)
	}
	running(t, h2, web, sum)
	if got := identity(t, h2, ref); got != want {
		t.Errorf("%s on %s: %s, want %s", ref, h2.Name, got, want)
	}
	if got := h2.MustDocker(t, "exec", web, "cat", "/etc/layer"); got != "changed" {
		t.Errorf("writable layer on %s: %q", h2.Name, got)
	}

	// And back, once the volume is copied and the source let go of (h1
	// keeps the stopped container and its volume until then).
	waitComplete(t, h2, web)
	if r := env.Docker(harness.Ctx(t), "--context", h2.Context, "migrate", "failover", web, "--remove-source"); r.Err != nil {
		t.Fatalf("failover: %v\n%s", r.Err, r.Combined())
	}
	migrateOn(t, h2, web, "--to", h1.Context)
	running(t, h1, web, sum)
	if got := identity(t, h1, ref); got != want {
		t.Errorf("%s on %s after the move back: %s, want %s", ref, h1.Name, got, want)
	}
	if got := h1.MustDocker(t, "exec", web, "cat", "/etc/layer"); got != "changed" {
		t.Errorf("writable layer on %s after the move back: %q", h1.Name, got)
	}
}

// An image built on 28.5 (on its containerd store, gzipped layers in an
// OCI archive) moves to 20.10, which has never seen it.
func TestImageFromNewerEngine(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	web := h2.Unique(t, "web")
	ref := "cargo-test/" + h2.Unique(t, "img") + ":v1"
	base := h2.Unique(t, "base")
	h2.MustDocker(t, "run", "--name", base, env.Image, "sh", "-c", "echo newer > /etc/which")
	h2.MustDocker(t, "commit", base, ref)
	t.Cleanup(func() {
		h1.Docker(harness.Ctx(t), "rm", "-f", web)
		h1.Docker(harness.Ctx(t), "image", "rm", "-f", ref)
		h2.Docker(harness.Ctx(t), "image", "rm", "-f", ref)
	})
	want := identity(t, h2, ref)
	h2.MustDocker(t, "run", "-d", "--name", web, "--stop-timeout", "1", ref, "sleep", "3600")

	d := migrateOn(t, h2, web, "--to", h1.Context)
	if !strings.Contains(d["image"], "1 of 2 layers sent") {
		t.Errorf("image phase to %s: %q", h1.Name, d["image"])
	}
	if got := h1.MustDocker(t, "exec", web, "cat", "/etc/which"); got != "newer" {
		t.Fatalf("%s on %s: %q", web, h1.Name, got)
	}
	if got := identity(t, h1, ref); got != want {
		t.Errorf("%s on %s: %s, want %s", ref, h1.Name, got, want)
	}
}
