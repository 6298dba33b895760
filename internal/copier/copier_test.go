package copier

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/replica"
)

// fakeSource serves content from memory and counts what it was asked for.
type fakeSource struct {
	mu        sync.Mutex
	content   map[int][]byte
	wholes    map[int]int    // index -> times sent whole
	chunks    map[[2]int]int // (index, offset) -> times sent
	failNext  int            // fail this many calls with a transient error
	permanent bool
	completed int
	gate      chan struct{} // when set, Batch waits on it
}

func (f *fakeSource) chunkCount(i, off int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.chunks[[2]int{i, off}]
}

func (f *fakeSource) snapshot() map[[2]int]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[[2]int]int{}
	for k, v := range f.chunks {
		out[k] = v
	}
	return out
}

var errTransient = errors.New("connection refused")
var errGone = errors.New("export gone")

func (f *fakeSource) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.permanent {
		return errGone
	}
	if f.failNext > 0 {
		f.failNext--
		return errTransient
	}
	return nil
}

func (f *fakeSource) Batch(_ context.Context, idx []int, fn func(int, int64, io.Reader) error) error {
	if f.gate != nil {
		<-f.gate
	}
	if err := f.fail(); err != nil {
		return err
	}
	for _, i := range idx {
		f.mu.Lock()
		f.wholes[i]++
		b := f.content[i]
		f.mu.Unlock()
		if err := fn(i, int64(len(b)), bytes.NewReader(b)); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeSource) ReadRange(_ context.Context, i int, off, n int64, w io.Writer) (int64, error) {
	if err := f.fail(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.chunks[[2]int{i, int(off)}]++
	b := f.content[i][off : off+n]
	f.mu.Unlock()
	m, err := w.Write(b)
	return int64(m), err
}

func (f *fakeSource) Complete(context.Context, string) error {
	if err := f.fail(); err != nil {
		return err
	}
	f.mu.Lock()
	f.completed++
	f.mu.Unlock()
	return nil
}

type fixture struct {
	dir string
	m   *manifest.Manifest
	src *fakeSource
}

// newFixture makes a manifest of many small files, two large files and a
// hard link, and a source holding their content.
func newFixture(t *testing.T, small int) *fixture {
	f := &fixture{dir: t.TempDir(), src: &fakeSource{content: map[int][]byte{}, wholes: map[int]int{}, chunks: map[[2]int]int{}}}
	add := func(p string, typ manifest.Type, size int64) int {
		i := 0
		if f.m == nil {
			f.m = &manifest.Manifest{}
		} else {
			i = len(f.m.Entries)
		}
		f.m.Entries = append(f.m.Entries, manifest.Entry{Index: i, Path: p, Type: typ, Mode: 0o644, Size: size, LinkTo: manifest.NoLink, Nlink: 1, MtimeNs: 1e18})
		if typ == manifest.TypeFile {
			b := make([]byte, size)
			rand.Read(b)
			f.src.content[i] = b
		}
		return i
	}
	add(".", manifest.TypeDir, 0)
	add("d", manifest.TypeDir, 0)
	for i := range small {
		add(fmt.Sprintf("d/f%04d", i), manifest.TypeFile, int64(i*37%5000))
	}
	add("big1", manifest.TypeFile, 3*replica.ChunkSize+5)
	add("big2", manifest.TypeFile, replica.LargeFile)
	first := add("d/linked", manifest.TypeFile, 100)
	l := add("d/link2", manifest.TypeFile, 100)
	f.m.Entries[first].Nlink, f.m.Entries[l].Nlink, f.m.Entries[l].LinkTo = 2, 2, first
	delete(f.src.content, l)
	return f
}

func (f *fixture) copier(t *testing.T, opts Options) (*Copier, *replica.Replica) {
	t.Helper()
	r, err := replica.Open(f.dir, f.m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if opts.Permanent == nil {
		opts.Permanent = func(err error) bool { return errors.Is(err, errGone) }
	}
	return New(r, f.src, opts, slog.New(slog.NewTextHandler(io.Discard, nil))), r
}

func (f *fixture) verify(t *testing.T) {
	t.Helper()
	f.verifyContent(t)
	a, _ := os.Stat(filepath.Join(f.dir, "data/d/linked"))
	b, _ := os.Stat(filepath.Join(f.dir, "data/d/link2"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Fatal("hard link not restored")
	}
}

// verifyContent checks every file's bytes in the replica.
func (f *fixture) verifyContent(t *testing.T) {
	t.Helper()
	for i, want := range f.src.content {
		got, err := os.ReadFile(filepath.Join(f.dir, "data", f.m.Entries[i].Path))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %v (%d bytes, want %d)", f.m.Entries[i].Path, err, len(got), len(want))
		}
	}
}

func TestRunCopiesEverythingOnce(t *testing.T) {
	f := newFixture(t, 500)
	c, _ := f.copier(t, Options{BatchFiles: 64})
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.verify(t)
	for i, n := range f.src.wholes {
		if n != 1 {
			t.Errorf("%s sent %d times", f.m.Entries[i].Path, n)
		}
	}
	for k, n := range f.src.chunks {
		if n != 1 {
			t.Errorf("chunk %v sent %d times", k, n)
		}
	}
	s := c.Status()
	if s.State != StateComplete || s.FilesCopied != s.FilesTotal || s.BytesCopied != s.BytesTotal || f.src.completed != 1 {
		t.Fatalf("status %+v, completed %d", s, f.src.completed)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed")
	}
}

// Reads of files not yet local fetch them, the range asked for first, and
// the background copy fetches none of that again.
func TestOnDemandReadsAreNotFetchedAgain(t *testing.T) {
	f := newFixture(t, 50)
	c, _ := f.copier(t, Options{})
	ctx := context.Background()
	big := len(f.m.Entries) - 4 // big1
	buf := make([]byte, 10)
	n, err := c.ReadAt(ctx, big, buf, 2*replica.ChunkSize+3)
	if err != nil || n != 10 || !bytes.Equal(buf, f.src.content[big][2*replica.ChunkSize+3:][:10]) {
		t.Fatalf("ReadAt big: %d %v", n, err)
	}
	// The read got its bytes by themselves; the chunk follows, once.
	if f.src.chunkCount(big, 2*replica.ChunkSize+3) != 1 {
		t.Fatalf("fetched %v, want the bytes read first", f.src.snapshot())
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.src.chunkCount(big, 2*replica.ChunkSize) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := f.src.snapshot(); len(got) != 2 || f.src.chunkCount(big, 2*replica.ChunkSize) != 1 {
		t.Fatalf("fetched %v, want the bytes read and then their chunk", got)
	}
	// Reading the end of the file reports EOF with the bytes.
	n, err = c.ReadAt(ctx, big, make([]byte, 100), int64(len(f.src.content[big]))-5)
	if n != 5 || !errors.Is(err, io.EOF) {
		t.Fatalf("read at end: %d %v", n, err)
	}
	// A small file, through its hard link.
	link := len(f.m.Entries) - 1
	n, err = c.ReadAt(ctx, link, buf, 0)
	if err != nil || n != 10 || !bytes.Equal(buf, f.src.content[link-1][:10]) {
		t.Fatalf("ReadAt link: %d %v", n, err)
	}
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	f.verify(t)
	if f.src.wholes[link-1] != 1 || f.src.chunkCount(big, 2*replica.ChunkSize) != 1 {
		t.Fatal("the background copy fetched again what reads had fetched")
	}
}

// The copy survives transient failures (stalled, then on), resumes after a
// restart without fetching completed files again, and fails for good when
// the export is gone.
func TestStallResumeAndFail(t *testing.T) {
	f := newFixture(t, 300)
	f.src.failNext = 3
	c, _ := f.copier(t, Options{BatchFiles: 16, Workers: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	sawStall := false
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s := c.Status()
		if s.State == StateStalled && s.Error != "" {
			sawStall = true
		}
		if s.FilesCopied > 100 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	if !sawStall {
		t.Fatal("never showed stalled while the source failed")
	}
	copied := c.Status().FilesCopied
	sentBefore := map[int]int{}
	for k, v := range f.src.wholes {
		sentBefore[k] = v
	}

	c2, r2 := f.copier(t, Options{BatchFiles: 16})
	if files, _ := r2.Progress(); files < copied {
		t.Fatalf("progress fell back from %d to %d files", copied, files)
	}
	if err := c2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.verify(t)
	for i := range f.src.content {
		if r2.Done(i) && sentBefore[i] > 0 && f.src.wholes[i] > sentBefore[i] {
			t.Fatalf("%s fetched again after the restart", f.m.Entries[i].Path)
		}
	}

	g := newFixture(t, 10)
	g.src.permanent = true
	c3, _ := g.copier(t, Options{})
	if err := c3.Run(context.Background()); !errors.Is(err, errGone) {
		t.Fatalf("Run with the export gone: %v", err)
	}
	if s := c3.Status(); s.State != StateFailed || s.Error == "" {
		t.Fatalf("status %+v", s)
	}
}

// While an on-demand read is being served, the background copy waits.
func TestBackgroundYieldsToReads(t *testing.T) {
	f := newFixture(t, 20)
	c, _ := f.copier(t, Options{Workers: 1})
	gate := make(chan struct{})
	f.src.gate = gate
	readDone := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(context.Background(), 3, make([]byte, 1), 0) // d/f0001, 37 bytes
		readDone <- err
	}()
	// Wait until the read registered its demand.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		c.demand.mu.Lock()
		d := c.demand.n
		c.demand.mu.Unlock()
		if d == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.demand.mu.Lock()
	if c.demand.n != 1 {
		t.Fatal("the read never registered as on-demand")
	}
	c.demand.mu.Unlock()
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(context.Background()) }()
	close(gate)
	if err := <-readDone; err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	f.verify(t)
}
