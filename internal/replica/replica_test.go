package replica

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/manifest"
)

var mtime = time.Date(2025, 5, 6, 7, 8, 9, 123456789, time.UTC).UnixNano()

// testManifest: root, a dir, a small file, a large file (3 chunks), a hard
// link to the small file, a symlink, a fifo and an empty file.
func testManifest() *manifest.Manifest {
	e := func(i int, p string, t manifest.Type, mode uint32, size int64) manifest.Entry {
		return manifest.Entry{Index: i, Path: p, Type: t, Mode: mode, UID: 1000, GID: 1000, Size: size, MtimeNs: mtime, LinkTo: manifest.NoLink, Nlink: 1}
	}
	m := &manifest.Manifest{Entries: []manifest.Entry{
		e(0, ".", manifest.TypeDir, 0o755, 0),
		e(1, "dir", manifest.TypeDir, 0o2750, 0),
		e(2, "dir/small", manifest.TypeFile, 0o600, 1000),
		e(3, "dir/large", manifest.TypeFile, 0o644, 2*ChunkSize+123),
		e(4, "link", manifest.TypeFile, 0o600, 1000),
		e(5, "sym", manifest.TypeSymlink, 0o777, 0),
		e(6, "fifo", manifest.TypeFIFO, 0o640, 0),
		e(7, "empty", manifest.TypeFile, 0o644, 0),
	}}
	m.Entries[0].UID, m.Entries[0].GID = 0, 0
	m.Entries[2].Nlink, m.Entries[4].Nlink, m.Entries[4].LinkTo = 2, 2, 2
	m.Entries[5].Target = "dir/small"
	m.Entries[2].Xattrs = map[string][]byte{"user.note": []byte("hi")}
	return m
}

func randBytes(t *testing.T, n int64) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWholeChunksAndResume(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	small, large := randBytes(t, 1000), randBytes(t, m.Entries[3].Size)
	r, err := Open(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if files, bytes := r.Totals(); files != 3 || bytes != 1000+m.Entries[3].Size {
		t.Fatalf("totals %d %d", files, bytes)
	}
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	if err := r.Skeleton(); err != nil {
		t.Fatalf("skeleton is not idempotent: %v", err)
	}
	// A short source must not produce a complete file.
	if err := r.WriteWhole(2, Background, bytes.NewReader(small[:10])); err == nil {
		t.Fatal("short content accepted")
	}
	if r.Done(2) {
		t.Fatal("short file counted done")
	}
	if err := r.WriteWhole(2, Background, bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	// Two of three chunks of the large file, then a "crash".
	p, err := r.Partial(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{0, 2} {
		off, n := p.Range(c)
		if _, err := p.WriterAt().WriteAt(large[off:off+n], off); err != nil {
			t.Fatal(err)
		}
		if err := p.MarkChunk(c); err != nil {
			t.Fatal(err)
		}
	}
	_, before := r.Progress()
	r.Close()
	// A torn record at the log's end is ignored.
	f, err := os.OpenFile(filepath.Join(dir, "partial", "3.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	r, err = Open(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	files, after := r.Progress()
	if files != 1 || after != before || after != 1000+ChunkSize+123 {
		t.Fatalf("after restart: %d files %d bytes, before %d bytes", files, after, before)
	}
	p, err = r.Partial(3)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Missing(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("missing chunks %v, want [1]", got)
	}
	off, n := p.Range(1)
	if _, err := p.WriterAt().WriteAt(large[off:off+n], off); err != nil {
		t.Fatal(err)
	}
	if err := p.MarkChunk(1); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteWhole(7, Background, bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	if !r.Complete() {
		t.Fatal("not complete")
	}
	if _, err := p.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrFinished) {
		t.Fatalf("read of finished partial: %v", err)
	}
	if _, err := r.Partial(3); !errors.Is(err, ErrFinished) {
		t.Fatalf("Partial of a complete file: %v", err)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}

	data := filepath.Join(dir, "data")
	for path, want := range map[string][]byte{"dir/small": small, "link": small, "dir/large": large, "empty": {}} {
		got, err := os.ReadFile(filepath.Join(data, path))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %v (len %d, want %d)", path, err, len(got), len(want))
		}
	}
	check := func(path string, mode os.FileMode, uid uint32, nlink uint64) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(data, path))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || st.Uid != uid || uint64(st.Nlink) != nlink || fi.ModTime().UnixNano() != mtime {
			t.Errorf("%s: mode %v uid %d nlink %d mtime %v", path, fi.Mode(), st.Uid, st.Nlink, fi.ModTime())
		}
	}
	check("dir", os.ModeDir|os.ModeSetgid|0o750, 1000, 2)
	check("dir/small", 0o600, 1000, 2)
	check("dir/large", 0o644, 1000, 1)
	check("sym", os.ModeSymlink|0o777, 1000, 1)
	check("fifo", os.ModeNamedPipe|0o640, 1000, 1)
	if target, _ := os.Readlink(filepath.Join(data, "sym")); target != "dir/small" {
		t.Errorf("symlink target %q", target)
	}
	buf := make([]byte, 8)
	if n, err := syscall.Getxattr(filepath.Join(data, "dir/small"), "user.note", buf); err != nil || string(buf[:n]) != "hi" {
		t.Errorf("xattr: %v %q", err, buf[:n])
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "partial")); len(left) != 0 {
		t.Errorf("partial files left: %v", left)
	}
}

func TestOpenLocalFollowsHardLinks(t *testing.T) {
	r, err := Open(t.TempDir(), testManifest())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.OpenLocal(4); ok {
		t.Fatal("link local before its content")
	}
	if err := r.WriteWhole(2, Background, bytes.NewReader(make([]byte, 1000))); err != nil {
		t.Fatal(err)
	}
	f, ok, err := r.OpenLocal(4)
	if err != nil || !ok {
		t.Fatalf("OpenLocal(link) = %v %v", ok, err)
	}
	f.Close()
}

// A crash after a hard-linked file was renamed into place but before its
// other names were linked is mended at the next start; directory xattrs
// are kept.
func TestSkeletonMendsLinksAndKeepsDirXattrs(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	m.Entries[1].Xattrs = map[string][]byte{"user.dir": []byte("d")}
	r, err := Open(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteWhole(2, Background, bytes.NewReader(make([]byte, 1000))); err != nil {
		t.Fatal(err)
	}
	r.Close()
	link := filepath.Join(dir, "data", "link")
	if err := os.Remove(link); err != nil { // as if the crash came before the link
		t.Fatal(err)
	}
	r, err = Open(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(dir, "data", "dir", "small"))
	b, err := os.Stat(link)
	if err != nil || !os.SameFile(a, b) {
		t.Fatalf("link not mended: %v", err)
	}
	buf := make([]byte, 8)
	if n, err := syscall.Getxattr(filepath.Join(dir, "data", "dir"), "user.dir", buf); err != nil || string(buf[:n]) != "d" {
		t.Fatalf("directory xattr: %v %q", err, buf[:n])
	}
}

// A reader asking for a large file's Partial while the file is being
// moved into place must never get a fresh, empty one (its chunk log would
// still say every chunk is there, so zeros would be served as data).
func TestPartialWhileFinishing(t *testing.T) {
	if !failpoint.Enabled {
		t.Skip("needs -tags failpoints")
	}
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r, err := Open(t.TempDir(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	p, err := r.Partial(3)
	if err != nil {
		t.Fatal(err)
	}
	var racing *Partial
	var racingErr error
	defer failpoint.SetFunc("replica.after-rename", func() error {
		racing, racingErr = r.Partial(3)
		return nil
	})()
	for c := range p.Chunks() {
		off, n := p.Range(c)
		if _, err := p.WriterAt().WriteAt(large[off:off+n], off); err != nil {
			t.Fatal(err)
		}
		if err := p.MarkChunk(c); err != nil {
			t.Fatal(err)
		}
	}
	if !r.Done(3) {
		t.Fatal("not done")
	}
	if racingErr == nil {
		buf := make([]byte, 4096)
		n, err := racing.ReadAt(buf, 0)
		if !errors.Is(err, ErrFinished) && !bytes.Equal(buf[:n], large[:n]) {
			t.Fatalf("a Partial taken while finishing read %d bytes (%v) that are not the file's", n, err)
		}
	} else if !errors.Is(racingErr, ErrFinished) {
		t.Fatal(racingErr)
	}
	if _, err := r.Partial(3); !errors.Is(err, ErrFinished) {
		t.Fatalf("Partial after finishing: %v", err)
	}
	f, ok, err := r.OpenLocal(3)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, large) {
		t.Fatal("local copy differs")
	}
}

// A file with three names that fails between linking its second and third
// is whole at the next start: Skeleton links what is missing.
func TestLinkGroupMendedAfterFailure(t *testing.T) {
	if !failpoint.Enabled {
		t.Skip("needs -tags failpoints")
	}
	dir := t.TempDir()
	m := testManifest()
	third := manifest.Entry{Index: 8, Path: "dir/third", Type: manifest.TypeFile, Mode: 0o600, UID: 1000, GID: 1000,
		Size: 1000, MtimeNs: mtime, LinkTo: 2}
	m.Entries = append(m.Entries, third)
	for _, i := range []int{2, 4, 8} {
		m.Entries[i].Nlink = 3
	}
	r, err := Open(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	calls := 0
	reset := failpoint.SetFunc("replica.link.before-name", func() error {
		if calls++; calls == 2 {
			return errors.New("crash")
		}
		return nil
	})
	err = r.WriteWhole(2, Background, bytes.NewReader(make([]byte, 1000)))
	reset()
	if err == nil || r.Done(2) {
		t.Fatalf("WriteWhole with a failing link: %v, done %v", err, r.Done(2))
	}
	r.Close()
	data := filepath.Join(dir, "data")
	if _, err := os.Lstat(filepath.Join(data, "dir/third")); !os.IsNotExist(err) {
		t.Fatalf("third name before the restart: %v", err)
	}

	r, err = Open(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Done(2) {
		t.Fatal("a file renamed into place is not done after a restart")
	}
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(data, "dir/small"))
	for _, p := range []string{"link", "dir/third"} {
		b, err := os.Stat(filepath.Join(data, p))
		if err != nil || !os.SameFile(a, b) {
			t.Errorf("%s not linked: %v", p, err)
		}
	}
}

// An invalid manifest opens no replica.
func TestOpenRefusesInvalidManifest(t *testing.T) {
	m := testManifest()
	m.Entries[4].Nlink = 1 // its group has two names
	if _, err := Open(t.TempDir(), m); !errors.Is(err, manifest.ErrInvalid) {
		t.Fatalf("Open: %v, want an invalid manifest", err)
	}
}
