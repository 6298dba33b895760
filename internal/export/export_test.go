package export

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/peer"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestExportServesFilesByIndexOnly(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("hello"), 0o644))
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "escape")))
	must(t, os.WriteFile(filepath.Join(dir, "grows"), []byte("x"), 0o644))

	calls := 0
	fail := true
	e, err := Open(context.Background(), "id1", "tok", dir, func(string) error {
		calls++
		if fail {
			return errors.New("disk full")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.TokenHash() != peer.HashToken("tok") {
		t.Fatal("token hash")
	}
	var buf strings.Builder
	if err := e.WriteManifest(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Decode(strings.NewReader(buf.String()), manifest.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	index := map[string]int{}
	for _, ent := range m.Entries {
		index[ent.Path] = ent.Index
	}
	f, err := e.Open(context.Background(), index["sub/f"])
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := f.ReadAt(b, 0); err != nil || string(b) != "hello" || f.Size() != 5 {
		t.Fatalf("read %q %v", b, err)
	}
	f.Close()

	must(t, os.WriteFile(filepath.Join(dir, "grows"), []byte("xyz"), 0o644))
	for _, tt := range []struct {
		name  string
		index int
		want  string
	}{
		{"root directory", 0, "not a regular file"},
		{"symlink out of the volume", index["escape"], "not a regular file"},
		{"negative", -1, "no entry"},
		{"past the end", len(m.Entries), "no entry"},
		{"changed while frozen", index["grows"], "changed while exported"},
	} {
		if _, err := e.Open(context.Background(), tt.index); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}

	if err := e.Complete(context.Background(), "r"); err == nil {
		t.Fatal("a failed completion reported success")
	}
	fail = false
	for range 2 {
		if err := e.Complete(context.Background(), "r"); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 2 {
		t.Fatalf("onComplete ran %d times, want 2 (the failure, then once)", calls)
	}
}

func TestRegistry(t *testing.T) {
	e, err := Open(context.Background(), "id1", "tok", t.TempDir(), func(string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	r := NewRegistry()
	r.Add(e)
	if got, ok := r.Lookup("id1"); !ok || got != e {
		t.Fatal("lookup")
	}
	r.Remove("id1")
	if _, ok := r.Lookup("id1"); ok {
		t.Fatal("removed export still found")
	}
}

// A tree a target would refuse is refused at once on the source.
func TestOpenRefusesWhatATargetWould(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", "b", "c"} {
		must(t, os.WriteFile(filepath.Join(dir, name), nil, 0o644))
	}
	saved := targetLimits
	t.Cleanup(func() { targetLimits = saved })
	targetLimits = manifest.Limits{MaxEntries: 3}
	_, err := Open(context.Background(), "id1", "tok", dir, func(string) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "too large to move") || !strings.Contains(err.Error(), "MaxEntries") {
		t.Fatalf("err = %v", err)
	}
	targetLimits = manifest.Limits{MaxEntries: 4}
	e, err := Open(context.Background(), "id1", "tok", dir, func(string) error { return nil })
	must(t, err)
	must(t, e.Close())
}
