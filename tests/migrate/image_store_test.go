package migrate_test

import (
	"archive/tar"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
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
// OCI index and manifests name, or every file its manifest.json names (an image store may save what it has of
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
		// Before Engine 25: manifest.json names each file.
		var m []struct {
			Config string
			Layers []string
		}
		if err := json.Unmarshal([]byte(files["manifest.json"]), &m); err != nil || len(m) == 0 {
			return fmt.Errorf("neither index.json nor a manifest.json (%w)", cmp.Or(err, errors.New("no image in it")))
		}
		for _, name := range append(m[0].Layers, m[0].Config) {
			if _, ok := files[name]; !ok {
				return fmt.Errorf("manifest.json names %s, not in the archive", name)
			}
		}
		return nil
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

// ociArchive writes a `docker load` archive of a one-layer image named
// ref whose layer is stored uncompressed, as a classic store saves it,
// and returns its path.
func ociArchive(t *testing.T, layer []byte, ref string) string {
	t.Helper()
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		d := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
		blobs[d] = b
		return d, len(b)
	}
	diffID, layerSize := put(layer)
	cfg, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Cmd": []string{"sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	cfgDigest, cfgSize := put(cfg)
	mf, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diffID, "size": layerSize}},
	})
	mfDigest, mfSize := put(mf)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mfDigest, "size": mfSize,
			"annotations": map[string]string{"io.containerd.image.name": "docker.io/" + ref, "org.opencontainers.image.ref.name": ref[strings.LastIndex(ref, ":")+1:]}}},
	})
	compat, _ := json.Marshal([]any{map[string]any{
		"Config": "blobs/" + strings.Replace(cfgDigest, ":", "/", 1), "RepoTags": []string{ref},
		"Layers": []string{"blobs/" + strings.Replace(diffID, ":", "/", 1)},
	}})
	path := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	for d, b := range blobs {
		add("blobs/"+strings.Replace(d, ":", "/", 1), b)
	}
	add("index.json", index)
	add("manifest.json", compat)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// rootfsWith returns the busybox root the hosts' image is made of, with
// one more file, as a tar.
func rootfsWith(t *testing.T, name, content string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(env.Base, "busybox.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A target that has an image's lower layer unpacked, but stored in
// another form than the source's (uncompressed where the source keeps it
// gzipped): a classic store needs only the missing layer; a containerd
// store would be left without that blob, so the move sends the whole
// image and says why, and the image there is whole.
func TestMoveImageWhenTargetStoresLayerOtherwise(t *testing.T) {
	h1, h2 := env.Hosts[0], env.Hosts[1]
	base := "cargo-test/" + h1.Unique(t, "base") + ":v1"
	ref := "cargo-test/" + h1.Unique(t, "img") + ":v1"
	web, b := h1.Unique(t, "web"), h1.Unique(t, "b")
	root := rootfsWith(t, "etc/base", h1.Unique(t, "marker"))
	tarPath := filepath.Join(t.TempDir(), "root.tar")
	if err := os.WriteFile(tarPath, root, 0o644); err != nil {
		t.Fatal(err)
	}
	h1.MustDocker(t, "import", "-c", `CMD ["sh"]`, tarPath, base)
	h1.MustDocker(t, "run", "--name", b, base, "sh", "-c", "echo source > /etc/which")
	h1.MustDocker(t, "commit", b, ref)
	h2.MustDocker(t, "load", "-i", ociArchive(t, root, base))
	t.Cleanup(func() {
		h2.Docker(harness.Ctx(t), "rm", "-f", web)
		for _, h := range []*harness.Host{h1, h2} {
			h.Docker(harness.Ctx(t), "image", "rm", "-f", ref, base)
		}
	})
	layersOf := func(h *harness.Host, ref string) string {
		return h.MustDocker(t, "image", "inspect", "-f", "{{json .RootFS.Layers}}", ref)
	}
	if l1, l2 := layersOf(h1, base), layersOf(h2, base); l1 != l2 {
		t.Fatalf("the base images' layers differ: %s on %s, %s on %s", l1, h1.Name, l2, h2.Name)
	}
	want := imageIdentity(t, h1, ref)
	h1.MustDocker(t, "run", "-d", "--name", web, "--stop-timeout", "1", ref, "sleep", "3600")

	details := moveDetails(t, web, h2)
	wantSent := "1 of 2 layers sent"
	if h2.ContainerdStore(t) {
		wantSent = "all 2 layers sent (" + h2.Context + " has the other layers unpacked but not in the form " + h1.Context + " keeps them)"
	}
	if !strings.HasPrefix(details["image"], "copied "+ref) || !strings.Contains(details["image"], wantSent) {
		t.Fatalf("image phase: %q, want %q", details["image"], wantSent)
	}
	if got := imageIdentity(t, h2, ref); got != want {
		t.Errorf("%s on %s is %s, want the source's %s", ref, h2.Name, got, want)
	}
	if got := h2.MustDocker(t, "exec", web, "cat", "/etc/which"); got != "source" {
		t.Errorf("%s on %s runs the %s image", web, h2.Name, got)
	}
	if err := wholeSave(h2.MustDocker(t, "image", "save", ref)); err != nil {
		t.Errorf("%s as %s saves it: %v", ref, h2.Name, err)
	}
}
