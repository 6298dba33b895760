package migrate

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func diffID(content string) string {
	s := sha256.Sum256([]byte(content))
	return "sha256:" + hex.EncodeToString(s[:])
}

func saveArchive(t *testing.T, files [][2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f[0], Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f[1]))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f[1])); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	return buf.Bytes()
}

// gzipped is content as one gzip stream, as the containerd image store
// keeps a layer.
func gzipped(t *testing.T, content string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func names(t *testing.T, archive []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

func TestFilterSave(t *testing.T) {
	base, top := "base layer bytes", "top layer"
	layers := []string{diffID(base), diffID(top)}
	hexOf := func(d string) string { return d[len("sha256:"):] }
	legacy := saveArchive(t, [][2]string{
		{"cfg.json", "{}"}, {"aaa/json", "{}"}, {"aaa/layer.tar", top}, {"bbb/json", "{}"}, {"bbb/layer.tar", base}, {"manifest.json", "[]"},
	})
	oci := saveArchive(t, [][2]string{
		{"blobs/sha256/" + hexOf(layers[0]), base}, {"blobs/sha256/" + hexOf(layers[1]), top},
		{"blobs/sha256/" + hexOf(diffID("{}")), "{}"}, {"index.json", "{}"}, {"manifest.json", "[]"},
	})
	// The containerd image store keeps layers gzipped, named by the
	// compressed digest.
	gzBase, gzTop := gzipped(t, base), gzipped(t, top)
	c8d := saveArchive(t, [][2]string{
		{"blobs/sha256/" + hexOf(diffID(gzBase)), gzBase}, {"blobs/sha256/" + hexOf(diffID("{}")), "{}"},
		{"blobs/sha256/" + hexOf(diffID(gzTop)), gzTop}, {"blobs/sha256/" + hexOf(diffID("\x1f\x8bnot gzip")), "\x1f\x8bnot gzip"},
		{"index.json", "{}"}, {"manifest.json", "[]"},
	})
	tests := []struct {
		name    string
		archive []byte
		skip    map[string]bool
		want    []string
		sent    int
		skipped int64
	}{
		{"legacy, nothing skipped", legacy, nil, names(t, legacy), 2, 0},
		{"legacy, base on target", legacy, map[string]bool{layers[0]: true},
			[]string{"cfg.json", "aaa/json", "aaa/layer.tar", "bbb/json", "manifest.json"}, 1, int64(len(base))},
		{"oci, base on target", oci, map[string]bool{layers[0]: true},
			[]string{"blobs/sha256/" + hexOf(layers[1]), "blobs/sha256/" + hexOf(diffID("{}")), "index.json", "manifest.json"}, 1, int64(len(base))},
		{"oci, nothing skipped", oci, nil, names(t, oci), 2, 0},
		{"gzipped, base on target", c8d, map[string]bool{layers[0]: true},
			[]string{"blobs/sha256/" + hexOf(diffID("{}")), "blobs/sha256/" + hexOf(diffID(gzTop)),
				"blobs/sha256/" + hexOf(diffID("\x1f\x8bnot gzip")), "index.json", "manifest.json"}, 1, int64(len(gzBase))},
		{"gzipped, all on target", c8d, map[string]bool{layers[0]: true, layers[1]: true},
			[]string{"blobs/sha256/" + hexOf(diffID("{}")), "blobs/sha256/" + hexOf(diffID("\x1f\x8bnot gzip")), "index.json", "manifest.json"},
			0, int64(len(gzBase) + len(gzTop))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			var st sendStats
			if err := filterSave(bytes.NewReader(tt.archive), &out, layers, tt.skip, &st); err != nil {
				t.Fatal(err)
			}
			if got := names(t, out.Bytes()); !slices.Equal(got, tt.want) {
				t.Errorf("entries %v, want %v", got, tt.want)
			}
			if st.sent != tt.sent || st.skippedBytes != tt.skipped {
				t.Errorf("stats %+v, want sent %d skipped %d", st, tt.sent, tt.skipped)
			}
		})
	}
}

// The skipped blobs' bytes are left out, the others arrive whole.
func TestFilterSaveKeepsContent(t *testing.T) {
	blob := gzipped(t, "layer")
	in := saveArchive(t, [][2]string{{"blobs/sha256/" + diffID(blob)[len("sha256:"):], blob}})
	var out bytes.Buffer
	var st sendStats
	if err := filterSave(bytes.NewReader(in), &out, []string{diffID("layer")}, map[string]bool{diffID("other"): true}, &st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), in) || st.sent != 1 {
		t.Fatalf("archive changed (sent %d)", st.sent)
	}
}

func TestSameImage(t *testing.T) {
	classic := image.InspectResponse{ID: "sha256:cfg", Created: "t", Os: "linux", Architecture: "amd64"}
	classic.RootFS.Layers = []string{"sha256:l1"}
	c8d := classic
	c8d.ID, c8d.Descriptor = "sha256:manifest", &ocispec.Descriptor{}
	other := c8d
	other.ID = "sha256:other"
	arm := classic
	arm.Architecture = "arm64"
	for _, tt := range []struct {
		a, b image.InspectResponse
		want bool
	}{
		{classic, classic, true}, {classic, c8d, true}, {c8d, other, false},
		{arm, c8d, false}, {image.InspectResponse{ID: "sha256:x"}, classic, false},
	} {
		if got := sameImage(tt.a, tt.b); got != tt.want {
			t.Errorf("sameImage(%s, %s) = %v", tt.a.ID, tt.b.ID, got)
		}
	}
}

// imageEngine fakes the image calls of one engine: its store kind, its
// images and what its loads received.
type imageEngine struct {
	client.APIClient
	t      *testing.T
	c8d    bool
	images map[string]image.InspectResponse
	// save is what ImageSave answers; loads records each load's entries.
	save  []byte
	loads [][]string
	// incomplete makes a load leave the image's manifest unavailable
	// unless it carried every blob; unpackErr makes it report that error.
	incomplete bool
	unpackErr  string
}

func (e *imageEngine) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	var r client.SystemInfoResult
	r.Info.Driver = "overlay2"
	if e.c8d {
		r.Info.Driver = "overlayfs"
		r.Info.DriverStatus = [][2]string{{"driver-type", "io.containerd.snapshotter.v1"}}
	}
	return r, nil
}

func (e *imageEngine) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	img, ok := e.images[ref]
	if !ok {
		return client.ImageInspectResult{}, errors.New("no such image " + ref)
	}
	return client.ImageInspectResult{InspectResponse: img}, nil
}

func (e *imageEngine) ImageList(context.Context, client.ImageListOptions) (client.ImageListResult, error) {
	var r client.ImageListResult
	for ref, img := range e.images {
		if ref == img.ID {
			r.Items = append(r.Items, image.Summary{ID: img.ID})
		}
	}
	return r, nil
}

func (e *imageEngine) ImageSave(context.Context, []string, ...client.ImageSaveOption) (client.ImageSaveResult, error) {
	return io.NopCloser(bytes.NewReader(e.save)), nil
}

func (e *imageEngine) ImageLoad(_ context.Context, r io.Reader, _ ...client.ImageLoadOption) (client.ImageLoadResult, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	got := names(e.t, b)
	e.loads = append(e.loads, got)
	msg := `{"stream":"Loaded image: app:v1\n"}`
	if e.unpackErr != "" && len(e.loads) == 1 {
		msg = `{"stream":"Error unpacking image app:v1: ` + e.unpackErr + `\n"}`
	}
	img := e.images["src"]
	img.Manifests = []image.ManifestSummary{{ID: "sha256:m", Kind: image.ManifestKindImage, Available: !e.incomplete || len(got) == 4}}
	e.images["app:v1"], e.images[img.ID] = img, img
	return io.NopCloser(strings.NewReader(msg)), nil
}

func TestCopyImage(t *testing.T) {
	base, top := "base layer", "top layer"
	gz := func(s string) string { return gzipped(t, s) }
	layers := []string{diffID(base), diffID(top)}
	blob := func(s string) string { return "blobs/sha256/" + diffID(s)[len("sha256:"):] }
	archive := saveArchive(t, [][2]string{{blob(gz(base)), gz(base)}, {blob(gz(top)), gz(top)}, {"index.json", "{}"}, {"manifest.json", "[]"}})
	app := image.InspectResponse{ID: "sha256:app", Descriptor: &ocispec.Descriptor{}, Os: "linux", Architecture: "amd64"}
	app.RootFS.Layers = layers
	busybox := image.InspectResponse{ID: "sha256:busybox", Descriptor: &ocispec.Descriptor{}}
	busybox.RootFS.Layers = layers[:1]
	for _, tt := range []struct {
		name       string
		srcC8d     bool
		incomplete bool
		unpackErr  string
		want       string
		loads      []int // entries per load
	}{
		{"containerd stores", true, false, "", "copied app:v1 from src: 1 of 2 layers sent, 1 already on dst", []int{3}},
		{"blob missing after all", true, true, "", "copied app:v1 from src: all 2 layers sent (dst has the other layers unpacked but not in the form src keeps them)", []int{3, 4}},
		{"unpack failed", true, false, "layer missing", "copied app:v1 from src: all 2 layers sent (dst refused the image without the layers it has: loading image app:v1 on dst: Error unpacking image app:v1: layer missing)", []int{3, 4}},
		{"classic to containerd", false, false, "", "copied app:v1 from src: all 2 layers sent (dst keeps images in the containerd image store, src in a classic one", []int{4}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srcImg := app
			if !tt.srcC8d {
				srcImg.Descriptor = nil
			}
			src := &imageEngine{t: t, c8d: tt.srcC8d, save: archive, images: map[string]image.InspectResponse{"app:v1": srcImg, app.ID: srcImg, "src": srcImg}}
			dst := &imageEngine{t: t, c8d: true, incomplete: tt.incomplete, unpackErr: tt.unpackErr,
				images: map[string]image.InspectResponse{busybox.ID: busybox, "src": app}}
			m := &mover{src: Engine{Context: "src", API: src}, dst: Engine{Context: "dst", API: dst}}
			m.ctr.Image = app.ID
			m.ctr.Config = &container.Config{Image: "app:v1"}
			got, err := m.copyImage(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("detail %q, want %q", got, tt.want)
			}
			var n []int
			for _, l := range dst.loads {
				n = append(n, len(l))
			}
			if !slices.Equal(n, tt.loads) {
				t.Errorf("loads %v, want entries %v", dst.loads, tt.loads)
			}
			// The first load leaves the base out, unless the whole image goes at once.
			if has := slices.Contains(dst.loads[0], blob(gz(base))); has != !tt.srcC8d {
				t.Errorf("first load %v", dst.loads[0])
			}
			if ref := m.targetImage(t.Context()); ref != "app:v1" {
				t.Errorf("target container made from %s", ref)
			}
		})
	}
}
