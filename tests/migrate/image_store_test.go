package migrate_test

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// commitImage makes an image on h: busybox with one more layer, whose
// file /etc/which says what, tagged ref. It returns the image's ID.
func commitImage(t *testing.T, h *harness.Host, ref, what string) string {
	t.Helper()
	base := h.Unique(t, "base")
	h.MustDocker(t, "run", "--name", base, env.Image, "sh", "-c", "echo "+what+" > /etc/which")
	h.MustDocker(t, "commit", base, ref)
	h.MustDocker(t, "rm", base)
	return h.MustDocker(t, "image", "inspect", "-f", "{{.ID}}", ref)
}

// imageIdentity is what must not change when an image moves: its ID
// (the configuration's digest on a classic store, the manifest's or
// index's on the containerd store), its layers and its platform.
func imageIdentity(t *testing.T, h *harness.Host, ref string) string {
	t.Helper()
	return h.MustDocker(t, "image", "inspect", "-f", "{{.ID}} {{json .RootFS.Layers}} {{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}", ref)
}

// moveDetails moves web from h1 to h2 and returns each phase's detail.
func moveDetails(t *testing.T, web string, h2 *harness.Host) map[string]string {
	t.Helper()
	r := migrate(t, web, "--to", h2.Context, "--format", "json")
	if r.Err != nil {
		t.Fatalf("migrate: %v\n%s", r.Err, r.Combined())
	}
	var res struct {
		Phases []struct{ Name, Detail string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatal(err)
	}
	details := map[string]string{}
	for _, p := range res.Phases {
		details[p.Name] = p.Detail
	}
	return details
}

// A target with another image under the container's image name gets the
// source's image, with its identity, and only the layer it lacks; the
// name then means the source's image there, as after a `docker load`.
// On either image store (CARGO_CONTAINERD_STORE).
func TestMoveImageReplacesTargetsUnderSameName(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	ref := "cargo-test/" + h1.Unique(t, "img") + ":v1"
	web := h1.Unique(t, "web")
	commitImage(t, h1, ref, "source")
	theirs := commitImage(t, h2, ref, "target")
	t.Cleanup(func() {
		h2.Docker(harness.Ctx(t), "rm", "-f", web)
		h2.Docker(harness.Ctx(t), "image", "rm", "-f", ref, theirs)
	})
	want := imageIdentity(t, h1, ref)
	h1.MustDocker(t, "run", "-d", "--name", web, "--stop-timeout", "1", ref, "sleep", "3600")

	details := moveDetails(t, web, h2)
	// h2 has busybox below its own commit: only the source's commit goes.
	if !strings.HasPrefix(details["image"], "copied "+ref) || !strings.Contains(details["image"], "1 of 2 layers sent") {
		t.Fatalf("image phase: %q", details["image"])
	}
	if got := imageIdentity(t, h2, ref); got != want {
		t.Errorf("%s on %s is %s, want the source's %s", ref, h2.Name, got, want)
	}
	id := strings.Fields(want)[0]
	if got := h2.MustDocker(t, "inspect", "-f", "{{.Image}} {{.Config.Image}} {{.State.Running}}", web); got != id+" "+ref+" true" {
		t.Errorf("%s on %s: %s, want image %s %s running", web, h2.Name, got, id, ref)
	}
	if got := h2.MustDocker(t, "exec", web, "cat", "/etc/which"); got != "source" {
		t.Errorf("%s on %s runs the %s image", web, h2.Name, got)
	}
	// The image is whole on the target: its save there has every layer.
	if err := wholeSave(h2.MustDocker(t, "image", "save", ref)); err != nil {
		t.Errorf("%s as %s saves it: %v", ref, h2.Name, err)
	}
}

// When the container's image name no longer means its image on the
// source (the tag moved on), the image goes by ID and the target
// container runs it, not what the target has under that name.
func TestMoveImageByIDWhenNameMovedOn(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	ref := "cargo-test/" + h1.Unique(t, "img") + ":v1"
	web := h1.Unique(t, "web")
	mine := commitImage(t, h1, ref, "source")
	theirs := commitImage(t, h2, ref, "target")
	want := imageIdentity(t, h1, mine)
	h1.MustDocker(t, "run", "-d", "--name", web, "--stop-timeout", "1", ref, "sleep", "3600")
	// The name now means another image on h1.
	commitImage(t, h1, ref, "newer")
	t.Cleanup(func() {
		h2.Docker(harness.Ctx(t), "rm", "-f", web)
		h2.Docker(harness.Ctx(t), "image", "rm", "-f", ref, theirs, mine)
	})

	details := moveDetails(t, web, h2)
	if !strings.HasPrefix(details["image"], "copied "+mine) || !strings.Contains(details["image"], "1 of 2 layers sent") {
		t.Fatalf("image phase: %q", details["image"])
	}
	if got := imageIdentity(t, h2, mine); got != want {
		t.Errorf("the image on %s is %s, want the source's %s", h2.Name, got, want)
	}
	if got := h2.MustDocker(t, "inspect", "-f", "{{.Image}} {{.State.Running}}", web); got != mine+" true" {
		t.Errorf("%s on %s: %s, want image %s running", web, h2.Name, got, mine)
	}
	if got := h2.MustDocker(t, "exec", web, "cat", "/etc/which"); got != "source" {
		t.Errorf("%s on %s runs the %s image", web, h2.Name, got)
	}
	// The target's own image keeps its name.
	if got := h2.MustDocker(t, "image", "inspect", "-f", "{{.ID}}", ref); got != theirs {
		t.Errorf("%s on %s is %s now, want its own %s", ref, h2.Name, got, theirs)
	}
}

// wholeSave checks that a `docker save` archive holds every blob its
// OCI index and manifests name (an image store may save what it has of
// an image and leave the rest out).
func wholeSave(archive string) error {
	files := map[string]string{}
	tr := tar.NewReader(strings.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		files[h.Name] = string(b)
	}
	if _, ok := files["index.json"]; !ok {
		return errors.New("no index.json: not an OCI layout")
	}
	type desc struct{ MediaType, Digest string }
	var walk func(name string) error
	walk = func(name string) error {
		b, ok := files[name]
		if !ok {
			return fmt.Errorf("%s missing", name)
		}
		var doc struct {
			MediaType string
			Manifests []desc
			Config    desc
			Layers    []desc
		}
		if err := json.Unmarshal([]byte(b), &doc); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		blob := func(d desc) string { return "blobs/" + strings.Replace(d.Digest, ":", "/", 1) }
		for _, m := range doc.Manifests {
			if err := walk(blob(m)); err != nil {
				return err
			}
		}
		for _, l := range append(doc.Layers, doc.Config) {
			if l.Digest == "" {
				continue
			}
			if _, ok := files[blob(l)]; !ok {
				return fmt.Errorf("%s names %s, not in the archive", name, l.Digest)
			}
		}
		return nil
	}
	return walk("index.json")
}
