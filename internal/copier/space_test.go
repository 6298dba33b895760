package copier

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/replica"
)

// smallDisk mounts a tmpfs of size bytes for the test.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting the tmpfs: %v", err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// When the disk fills, the copy stalls saying how much space it needs,
// keeps what it copied, serves reads from the source meanwhile, and
// resumes by itself once space is freed.
func TestFullDiskStallsAndResumes(t *testing.T) {
	disk := smallDisk(t, "24m")
	f := newFixture(t, 100) // about 20 MiB
	f.dir = filepath.Join(disk, "volume")
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, 12<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := replica.Open(f.dir, f.m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	var logs syncLog // shown if the test fails
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	c := New(r, f.src, Options{Dir: f.dir, Permanent: func(err error) bool { return errors.Is(err, errGone) }}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(c.Close)
	run := make(chan error, 1)
	go func() { run <- c.Run(context.Background()) }()

	var s Status
	for deadline := time.Now().Add(20 * time.Second); ; {
		s = c.Status()
		if s.State == StateStalled && strings.Contains(s.Error, "more needed for the copy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never stalled on the full disk: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	const want = "the disk holding the volume is full: "
	if !strings.HasPrefix(s.Error, want) || !strings.HasSuffix(s.Error, "; free space on this host and the copy resumes by itself") {
		t.Fatalf("stalled with %q", s.Error)
	}
	if s.BytesCopied == 0 || s.BytesCopied == s.BytesTotal {
		t.Fatalf("stalled at %d of %d bytes", s.BytesCopied, s.BytesTotal)
	}
	t.Logf("stalled: %s (%d of %d bytes copied)", s.Error, s.BytesCopied, s.BytesTotal)

	// What is journaled stays; reads of what is not local are served
	// from the source.
	journaled := map[[2]int]bool{}
	var missingBig, missingChunk = -1, -1
	for i := range f.m.Entries {
		e := f.m.Entries[i]
		if !replica.HasContent(&e) || e.Size < replica.LargeFile || r.Done(i) {
			continue
		}
		p, err := r.Partial(i)
		if err != nil {
			t.Fatal(err)
		}
		for ch := range p.Chunks() {
			off, _ := p.Range(ch)
			if p.Has(ch) {
				journaled[[2]int{i, int(off)}] = true
			} else if missingBig < 0 {
				missingBig, missingChunk = i, ch
			}
		}
	}
	if missingBig < 0 {
		t.Fatal("no chunk is missing while the disk is full")
	}
	buf := make([]byte, 1000)
	off := int64(missingChunk)*replica.ChunkSize + 3
	if n, err := c.ReadAt(context.Background(), missingBig, buf, off); err != nil || !bytes.Equal(buf[:n], f.src.content[missingBig][off:off+int64(n)]) || n != len(buf) {
		t.Fatalf("reading a missing chunk on a full disk: %d bytes, %v", n, err)
	}
	read := false
	for i, want := range f.src.content {
		if r.Done(i) || len(want) < 2 || len(want) >= replica.LargeFile {
			continue
		}
		n, err := c.ReadAt(context.Background(), i, buf, 1)
		if err != nil && !errors.Is(err, io.EOF) || !bytes.Equal(buf[:n], want[1:1+n]) || n != min(len(buf), len(want)-1) {
			t.Fatalf("reading %s on a full disk: %d bytes, %v", f.m.Entries[i].Path, n, err)
		}
		read = true
		break
	}
	if !read {
		t.Log("every small file was copied before the disk filled")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, "the copy, after space was freed", run); err != nil {
		t.Fatal(err)
	}
	if s := c.Status(); s.State != StateComplete || s.Error != "" {
		t.Fatalf("status after space was freed: %+v", s)
	}
	f.verify(t)
	for k := range journaled {
		if n := f.src.chunkCount(k[0], k[1]); n != 1 {
			t.Errorf("chunk at %d of %s, journaled before the disk filled, was fetched %d times", k[1], f.m.Entries[k[0]].Path, n)
		}
	}
}

// syncLog collects a copier's log.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
