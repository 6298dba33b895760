package migrate

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/moby/moby/api/types/image"
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
	gz := func(content string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(content))
		zw.Close()
		return b.String()
	}
	gzBase, gzTop := gz(base), gz(top)
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
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte("layer"))
	zw.Close()
	blob := b.String()
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
