package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/manifest"
)

// fillAll copies every file of testManifest-like m into r.
func fillAll(t *testing.T, r *Replica, m *manifest.Manifest, large []byte) {
	t.Helper()
	if err := r.Skeleton(); err != nil {
		t.Fatal(err)
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		switch {
		case !HasContent(e) || r.Done(i):
		case e.Size >= LargeFile:
			if err := fillChunks(t, r, i, large, allChunks(e.Size)...); err != nil {
				t.Fatal(err)
			}
		default:
			if err := r.WriteWhole(i, Background, bytes.NewReader(make([]byte, e.Size))); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Verify passes on a complete replica and names the first entry that is
// not in place otherwise; a file it finds gone is counted missing again,
// so the copy fetches it anew.
func TestVerify(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, dir, m)
	defer r.Close()
	if err := r.Verify(); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Verify of an empty replica: %v", err)
	}
	fillAll(t, r, m, large)
	if err := r.Verify(); err != nil {
		t.Fatalf("Verify of a complete replica: %v", err)
	}
	data := filepath.Join(dir, "data")
	for _, tc := range []struct {
		name, path string
		breakIt    func(p string) error
		want       string
	}{
		{"a file gone", "dir/small", os.Remove, `"dir/small" is missing`},
		{"a link gone", "link", os.Remove, `"dir/small" has 1 links`},
		{"a split link", "link", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, make([]byte, 1000), 0o600)
		}, `"dir/small" has 1 links`},
		{"a file too short", "dir/large", func(p string) error { return os.Truncate(p, 10) }, `"dir/large" has 10 bytes`},
		{"a fifo gone", "fifo", os.Remove, `"fifo" is missing`},
		{"a type changed", "sym", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, nil, 0o600)
		}, `"sym" is a -`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.breakIt(filepath.Join(data, tc.path)); err != nil {
				t.Fatal(err)
			}
			err := r.Verify()
			var ie *IncompleteError
			if !errors.As(err, &ie) || !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify: %v, want %s", err, tc.want)
			}
			if r.Complete() && tc.path != "fifo" && tc.path != "sym" {
				t.Fatal("Complete after Verify found a file not in place")
			}
			// Mend as the copy would: fetch again what is not done.
			if err := os.RemoveAll(filepath.Join(data, "sym")); err != nil {
				t.Fatal(err)
			}
			fillAll(t, r, m, large)
			if err := r.Verify(); err != nil {
				t.Fatalf("Verify after mending: %v", err)
			}
			if files, b := r.Progress(); files != 3 || b != 1000+m.Entries[3].Size {
				t.Fatalf("progress after mending: %d files %d bytes", files, b)
			}
		})
	}
}

// A partial file left over fails Verify; Open removes logs and rewrites
// that belong to no file being filled.
func TestPartialLeftovers(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, dir, m)
	fillAll(t, r, m, large)
	stray := filepath.Join(dir, "partial", "3.log")
	if err := os.WriteFile(stray, []byte(logMagic), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "partial/3.log") {
		t.Fatalf("Verify with a partial file left: %v", err)
	}
	r.Close()
	for _, name := range []string{"3.log.tmp", "2", "junk"} {
		if err := os.WriteFile(filepath.Join(dir, "partial", name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r = mustOpen(t, dir, m)
	defer r.Close()
	if left, _ := os.ReadDir(filepath.Join(dir, "partial")); len(left) != 0 {
		t.Fatalf("left in partial/: %v", left)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
}

// Hard links split by an older version (two inodes for one group) are
// joined again when the group is mended: every name is the first name's
// inode.
func TestSplitLinksJoined(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	r := mustOpen(t, dir, m)
	fillAll(t, r, m, randBytes(t, m.Entries[3].Size))
	r.Close()
	link := filepath.Join(dir, "data", "link")
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(link, make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	r = mustOpen(t, dir, m)
	defer r.Close()
	if !sameFile(t, link, filepath.Join(dir, "data", "dir", "small")) {
		t.Fatal("the split names were not joined")
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
}

// Every journal record follows a sync of the partial file made after the
// chunk's bytes were written, so a power cut cannot leave a record of
// bytes that are not on disk. On the old code no sync was made at all.
func TestChunkRecordFollowsSync(t *testing.T) {
	needFailpoints(t)
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, t.TempDir(), m)
	defer r.Close()
	p, err := r.Partial(3)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var steps []string
	step := func(s string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			steps = append(steps, s)
			return nil
		}
	}
	defer failpoint.SetFunc("replica.chunk.before-sync", step("sync"))()
	defer failpoint.SetFunc("replica.chunk.before-record", step("record"))()
	for c := range p.Chunks() {
		off, n := p.Range(c)
		if _, err := p.WriterAt().WriteAt(large[off:off+n], off); err != nil {
			t.Fatal(err)
		}
		_ = step("write")()
		if err := p.MarkChunk(c); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := strings.Join(steps, " "), "write sync record write sync record write sync record"; got != want {
		t.Fatalf("steps %q, want %q", got, want)
	}
}

// A failed sync journals nothing; the chunk is journaled by the next
// MarkChunk, its own or another's.
func TestFailedSyncJournalsNothing(t *testing.T) {
	needFailpoints(t)
	dir := t.TempDir()
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, dir, m)
	reset := failpoint.Set("replica.chunk.before-sync", "1*error(EIO)")
	if err := fillChunks(t, r, 3, large, 0); !errors.Is(err, failpoint.ErrInjected) {
		t.Fatalf("MarkChunk with a failing sync: %v", err)
	}
	reset()
	if _, b := r.Progress(); b != 0 {
		t.Fatalf("%d bytes counted for a chunk not journaled", b)
	}
	if err := fillChunks(t, r, 3, large, 1); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r, missing := reopenPartial(t, dir, m, 3)
	defer r.Close()
	if !slices.Equal(missing, []int{2}) {
		t.Fatalf("missing %v, want [2]: chunk 0 rides on chunk 1's sync", missing)
	}
}

// Workers marking chunks of one file at once share syncs, and the file
// comes out whole (run with -race).
func TestConcurrentChunks(t *testing.T) {
	m := testManifest()
	m.Entries[3].Size = 16*ChunkSize + 5
	large := randBytes(t, m.Entries[3].Size)
	dir := t.TempDir()
	r := mustOpen(t, dir, m)
	defer r.Close()
	p, err := r.Partial(3)
	if err != nil {
		t.Fatal(err)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				off, n := p.Range(c)
				if _, err := p.WriterAt().WriteAt(large[off:off+n], off); err != nil {
					t.Error(err)
				}
				if err := p.MarkChunk(c); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for c := range p.Chunks() {
		next <- c
	}
	close(next)
	wg.Wait()
	got, err := os.ReadFile(filepath.Join(dir, "data", "dir", "large"))
	if err != nil || !bytes.Equal(got, large) || !r.Done(3) {
		t.Fatalf("the file: %v, done %v", err, r.Done(3))
	}
	if _, b := r.Progress(); b != m.Entries[3].Size {
		t.Fatalf("%d bytes counted", b)
	}
}

// A log of the version before checksums (bare 4-byte chunk numbers) is
// read, and rewritten in the current form before anything is appended.
func TestOldLogUpgraded(t *testing.T) {
	dir := t.TempDir()
	m := testManifest()
	large := randBytes(t, m.Entries[3].Size)
	r := mustOpen(t, dir, m)
	p, err := r.Partial(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{0, 2} {
		off, n := p.Range(c)
		if _, err := p.WriterAt().WriteAt(large[off:off+n], off); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	old := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 2), 0)
	if err := os.WriteFile(filepath.Join(dir, "partial", "3.log"), old, 0o600); err != nil {
		t.Fatal(err)
	}
	r = mustOpen(t, dir, m)
	if _, b := r.Progress(); b != ChunkSize+123 {
		t.Fatalf("%d bytes counted from an old log", b)
	}
	if err := fillChunks(t, r, 3, large, 1); err != nil {
		t.Fatal(err)
	}
	r.Close()
	got, err := os.ReadFile(filepath.Join(dir, "data", "dir", "large"))
	if err != nil || !bytes.Equal(got, large) {
		t.Fatalf("the file after an old log: %v", err)
	}
}
