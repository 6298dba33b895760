package replica

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/manifest"
)

func needFailpoints(t *testing.T) {
	t.Helper()
	if !failpoint.Enabled {
		t.Skip("needs -tags failpoints")
	}
}

// fillChunks writes and journals the chunks cs of large file i from
// content, and returns the last MarkChunk's error.
func fillChunks(t *testing.T, r *Replica, i int, content []byte, cs ...int) error {
	t.Helper()
	p, err := r.Partial(i)
	if err != nil {
		t.Fatal(err)
	}
	var last error
	for _, c := range cs {
		off, n := p.Range(c)
		if _, err := p.WriterAt().WriteAt(content[off:off+n], off); err != nil {
			t.Fatal(err)
		}
		last = p.MarkChunk(c)
	}
	return last
}

func allChunks(size int64) []int {
	var cs []int
	for c := range chunkCount(size) {
		cs = append(cs, c)
	}
	return cs
}

func mustOpen(t *testing.T, dir string, m *manifest.Manifest) *Replica {
	t.Helper()
	r, err := Open(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Lstat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Lstat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fa, fb)
}

func nlink(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Nlink)
}

// A plugin killed after the last chunk was journaled but before the file
// was moved into place finds every chunk journaled at its restart. On the
// old code nothing committed it: Done(3) stayed false and Missing() was
// empty, so no fetch was ever scheduled and the file never appeared.
func TestAllJournaledFileCommittedAtOpen(t *testing.T) {
	needFailpoints(t)
	for _, point := range []string{"replica.finish.before-commit", "replica.finish.before-rename"} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			m := testManifest()
			large := randBytes(t, m.Entries[3].Size)
			r := mustOpen(t, dir, m)
			reset := failpoint.Set(point, "error(killed)")
			err := fillChunks(t, r, 3, large, allChunks(m.Entries[3].Size)...)
			reset()
			if !errors.Is(err, failpoint.ErrInjected) {
				t.Fatalf("last MarkChunk: %v", err)
			}
			r.Close()

			r = mustOpen(t, dir, m)
			defer r.Close()
			if !r.Done(3) {
				p, err := r.Partial(3)
				t.Fatalf("restarted replica: file not done; Partial: %v, missing %v", err, p.Missing())
			}
			got, err := os.ReadFile(filepath.Join(dir, "data", "dir", "large"))
			if err != nil || !bytes.Equal(got, large) {
				t.Fatalf("committed file: %v (%d bytes)", err, len(got))
			}
			if files, b := r.Progress(); files != 1 || b != m.Entries[3].Size {
				t.Fatalf("progress %d files %d bytes", files, b)
			}
			if left, _ := os.ReadDir(filepath.Join(dir, "partial")); len(left) != 0 {
				t.Fatalf("partial files left: %v", left)
			}
		})
	}
}

// A commit that fails without a crash (ENOSPC, EPERM on fchown or
// fsetxattr) is done by the next Partial, the path the copier's retry
// takes. On the old code the next Partial reopened the partial file, found
// every chunk journaled and returned a Partial with nothing missing: the
// file was never committed.
func TestFailedCommitDoneOnRetry(t *testing.T) {
	needFailpoints(t)
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, t.TempDir(), m)
	defer r.Close()
	reset := failpoint.Set("replica.finish.before-rename", "error(no space left on device)")
	err := fillChunks(t, r, 3, large, allChunks(m.Entries[3].Size)...)
	reset()
	if err == nil || r.Done(3) {
		t.Fatalf("a failed commit: %v, done %v", err, r.Done(3))
	}
	p, err := r.Partial(3)
	if !errors.Is(err, ErrFinished) {
		t.Fatalf("Partial after a failed commit: %v, missing %v (want the file committed)", err, p.Missing())
	}
	if !r.Done(3) {
		t.Fatal("not done after the retry")
	}
	f, ok, err := r.OpenLocal(3)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer f.Close()
	got := make([]byte, len(large))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, large) {
		t.Fatalf("local copy differs: %v", err)
	}
}

// largeLinked is testManifest with a second name for the large file.
func largeLinked() *manifest.Manifest {
	m := testManifest()
	m.Entries = append(m.Entries, manifest.Entry{Index: 8, Path: "biglink", Type: manifest.TypeFile, Mode: 0o644,
		UID: 1000, GID: 1000, Size: m.Entries[3].Size, MtimeNs: mtime, LinkTo: 3, Nlink: 2})
	m.Entries[3].Nlink = 2
	return m
}

// The large file was renamed into place but linking its other name failed.
// The next Partial must see the file in place and mend the link. On the old
// code it created a new, empty, sparse partial file whose log said every
// chunk was there, and served zeros from it.
func TestPartialAfterRenameMendsLinks(t *testing.T) {
	needFailpoints(t)
	dir := t.TempDir()
	m := largeLinked()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, dir, m)
	defer r.Close()
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	reset := failpoint.Set("replica.link.before-name", "error(EMLINK)")
	err := fillChunks(t, r, 3, large, allChunks(m.Entries[3].Size)...)
	reset()
	if err == nil {
		t.Fatal("a failed link went unreported")
	}
	p, err := r.Partial(3)
	if !errors.Is(err, ErrFinished) {
		buf := make([]byte, 64)
		n, rerr := p.ReadAt(buf, 0)
		t.Fatalf("Partial of a file in place: %v; it reads %d bytes %x (%v), the file starts %x", err, n, buf[:n], rerr, large[:n])
	}
	data := filepath.Join(dir, "data")
	if !sameFile(t, filepath.Join(data, "dir/large"), filepath.Join(data, "biglink")) {
		t.Fatal("the link was not mended")
	}
	if _, err := os.Lstat(filepath.Join(dir, "partial", "3")); !os.IsNotExist(err) {
		t.Fatalf("a new partial file: %v", err)
	}
	if files, _ := r.Progress(); files != 1 || !r.Done(3) {
		t.Fatalf("files %d done %v", files, r.Done(3))
	}
}

// A replica whose hard-linked file lacks a name (a crash between the
// rename and the link) is not complete until the name is mended; Open
// mends it, and when that fails too the file is not counted. On the old
// code Open counted the file as copied and Complete was true at once,
// with the name still missing.
func TestCompleteNeedsEveryName(t *testing.T) {
	needFailpoints(t)
	dir := t.TempDir()
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, dir, m)
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteWhole(2, Background, bytes.NewReader(make([]byte, 1000))); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteWhole(7, Background, bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	if err := fillChunks(t, r, 3, large, allChunks(m.Entries[3].Size)...); err != nil {
		t.Fatal(err)
	}
	if !r.Complete() {
		t.Fatal("not complete")
	}
	r.Close()
	link := filepath.Join(dir, "data", "link")
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	reset := failpoint.Set("replica.link.before-name", "error(EMLINK)")
	r = mustOpen(t, dir, m)
	reset()
	defer r.Close()
	if files, b := r.Progress(); r.Complete() || files != 2 || b != 1000+m.Entries[3].Size {
		t.Fatalf("a group missing a name: complete %v, %d files %d bytes copied", r.Complete(), files, b)
	}
	if f, ok, err := r.OpenLocal(4); err != nil || !ok {
		t.Fatalf("the content is local, yet OpenLocal(link): %v %v", ok, err)
	} else {
		f.Close()
	}
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	if files, _ := r.Progress(); !r.Complete() || files != 3 {
		t.Fatalf("after mending: complete %v, %d files", r.Complete(), files)
	}
	if !sameFile(t, link, filepath.Join(dir, "data", "dir", "small")) {
		t.Fatal("link not mended")
	}
}

// barrier makes n callers of a failpoint wait for each other (or time out,
// when the code serialises them before the point).
func barrier(n int) func() error {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	return func() error {
		mu.Lock()
		if arrived++; arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(2 * time.Second):
		}
		return nil
	}
}

// The background batch and an on-demand read both write a hard-linked
// small file and reach the rename together. On the old code both renamed:
// the second replaced the inode the other name was linked to, leaving
// dir/small and link as two files with one link each.
func TestConcurrentWholeLandsOnce(t *testing.T) {
	needFailpoints(t)
	dir := t.TempDir()
	m := testManifest()
	small := randBytes(t, 1000)
	r := mustOpen(t, dir, m)
	defer r.Close()
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	defer failpoint.SetFunc("replica.whole.before-rename", barrier(2))()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for k, w := range []Writer{Background, OnDemand} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = r.WriteWhole(2, w, bytes.NewReader(small))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	if !sameFile(t, filepath.Join(data, "dir/small"), filepath.Join(data, "link")) || nlink(t, filepath.Join(data, "link")) != 2 {
		t.Fatalf("the names split: dir/small has %d links, link %d", nlink(t, filepath.Join(data, "dir/small")), nlink(t, filepath.Join(data, "link")))
	}
	if left, _ := filepath.Glob(filepath.Join(data, "dir", ".cargo-tmp-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if files, _ := r.Progress(); files != 1 {
		t.Fatalf("%d files counted", files)
	}
}

// A crash can leave a writer's temporary file beside a complete file (two
// writers, one rename, then the crash). Open removes every one. On the old
// code only those of incomplete files were removed.
func TestOpenRemovesEveryTempFile(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	r := mustOpen(t, dir, m)
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteWhole(2, Background, bytes.NewReader(make([]byte, 1000))); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteWhole(7, Background, bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	data := filepath.Join(dir, "data")
	left := []string{"dir/.cargo-tmp-2-d", ".cargo-tmp-7-b", "dir/.cargo-tmp-3-b"}
	for _, p := range left {
		if err := os.WriteFile(filepath.Join(data, p), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r = mustOpen(t, dir, m)
	defer r.Close()
	for _, p := range left {
		if _, err := os.Lstat(filepath.Join(data, p)); !os.IsNotExist(err) {
			t.Errorf("%s survived Open: %v", p, err)
		}
	}
}

// A source file may bear a temporary file's name (a leftover an older
// settle kept). Writing the file whose temporary name it is must not
// clobber it, and Open must not remove it. On the old code WriteWhole(2)
// truncated dir/.cargo-tmp-2-b, filled it with dir/small's bytes and
// renamed it away.
func TestTempNameNeverClobbersASourceFile(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	m.Entries = append(m.Entries, manifest.Entry{Index: 8, Path: "dir/.cargo-tmp-2-b", Type: manifest.TypeFile, Mode: 0o600,
		UID: 1000, GID: 1000, Size: 5, MtimeNs: mtime, LinkTo: manifest.NoLink, Nlink: 1})
	r := mustOpen(t, dir, m)
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteWhole(8, Background, bytes.NewReader([]byte("mine!"))); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteWhole(2, Background, bytes.NewReader(make([]byte, 1000))); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r = mustOpen(t, dir, m)
	defer r.Close()
	got, err := os.ReadFile(filepath.Join(dir, "data", "dir", ".cargo-tmp-2-b"))
	if err != nil || string(got) != "mine!" || !r.Done(8) {
		t.Fatalf("the source file named like a temporary one: %q %v, done %v", got, err, r.Done(8))
	}
}

// A torn record at the log's end is followed by the records appended after
// the restart. On the old code the new records were read 2 bytes out of
// step, so chunk 2, journaled after the restart, was lost (and a different
// tear can make the log name a chunk never written).
func TestLogTornRecordThenAppend(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, dir, m)
	if err := fillChunks(t, r, 3, large, 0); err != nil {
		t.Fatal(err)
	}
	r.Close()
	appendLog(t, dir, 3, []byte{0, 0})
	r = mustOpen(t, dir, m)
	if err := fillChunks(t, r, 3, large, 2); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r, missing := reopenPartial(t, dir, m, 3)
	defer r.Close()
	if !slices.Equal(missing, []int{1}) {
		t.Fatalf("missing %v, want [1]", missing)
	}
}

// After a power cut a log's tail can read as zeros (the size reached the
// disk, the bytes did not). On the old code four zero bytes read as a
// record of chunk 0, which was then served and committed as zeros.
func TestLogZeroTailIsNoRecord(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, dir, m)
	if err := fillChunks(t, r, 3, large, 2); err != nil {
		t.Fatal(err)
	}
	r.Close()
	appendLog(t, dir, 3, make([]byte, 16))
	r, missing := reopenPartial(t, dir, m, 3)
	defer r.Close()
	if !slices.Equal(missing, []int{0, 1}) {
		t.Fatalf("missing %v, want [0 1]", missing)
	}
	if _, b := r.Progress(); b != chunkLen(m.Entries[3].Size, 2) {
		t.Fatalf("%d bytes counted", b)
	}
}

func appendLog(t *testing.T, dir string, i int, b []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "partial", itoa(uint32(i))+".log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// reopenPartial opens the replica in dir again, as a restarted plugin
// would, and returns it with the chunks still missing of entry i.
func reopenPartial(t *testing.T, dir string, m *manifest.Manifest, i int) (*Replica, []int) {
	t.Helper()
	r := mustOpen(t, dir, m)
	p, err := r.Partial(i)
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	return r, p.Missing()
}
