package lazyfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// fakeBackend serves contents from memory ("remote") or from temp files
// ("local"), recording what ReadAt was asked.
type fakeBackend struct {
	t   testing.TB
	dir string // where local copies live

	mu      sync.Mutex
	content map[int][]byte                    // remote content by index
	gen     map[int]func(p []byte, off int64) // generated remote content (huge files)
	local   map[int]string                    // local copies by index
	readAts map[int][]int64                   // offsets ReadAt was asked for, by index
	opens   map[int]int                       // OpenLocal calls that returned a file
}

func newFakeBackend(t testing.TB) *fakeBackend {
	return &fakeBackend{
		t:       t,
		dir:     t.TempDir(),
		content: map[int][]byte{},
		gen:     map[int]func([]byte, int64){},
		local:   map[int]string{},
		readAts: map[int][]int64{},
		opens:   map[int]int{},
	}
}

// makeLocal writes index's content to a local file; from then on
// OpenLocal finds it.
func (b *fakeBackend) makeLocal(index int, data []byte) {
	p := filepath.Join(b.dir, "local-"+strconv.Itoa(index))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.local[index] = p
	b.mu.Unlock()
}

func (b *fakeBackend) OpenLocal(index int) (*os.File, bool, error) {
	b.mu.Lock()
	p, ok := b.local[index]
	b.mu.Unlock()
	if !ok {
		return nil, false, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, false, err
	}
	b.mu.Lock()
	b.opens[index]++
	b.mu.Unlock()
	return f, true, nil
}

func (b *fakeBackend) ReadAt(_ context.Context, index int, p []byte, off int64) (int, error) {
	b.mu.Lock()
	b.readAts[index] = append(b.readAts[index], off)
	data, ok := b.content[index]
	g := b.gen[index]
	b.mu.Unlock()
	if g != nil {
		g(p, off)
		return len(p), nil
	}
	if !ok {
		return 0, errors.New("fake backend: no content")
	}
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	// Short answers on purpose, so the caller's loop is exercised.
	n := copy(p[:min(len(p), 10000)], data[off:])
	return n, nil
}

func (b *fakeBackend) readAtOffsets(index int) []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.readAts[index])
}

func (b *fakeBackend) totalReadAts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, offs := range b.readAts {
		n += len(offs)
	}
	return n
}

func (b *fakeBackend) resetReadAts() {
	b.mu.Lock()
	b.readAts = map[int][]int64{}
	b.mu.Unlock()
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	p := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			p[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		p[i] = byte(r.Uint32())
	}
	return p
}

// genContent is the content of generated files: a pattern that depends
// on the offset, so a read at the wrong offset shows.
func genContent(p []byte, off int64) {
	for i := range p {
		o := off + int64(i)
		p[i] = byte(o*7 + o>>13)
	}
}

// builder assembles a manifest by hand.
type builder struct {
	m manifest.Manifest
}

const testMtime = int64(1_700_000_000_123_456_789)

func newBuilder() *builder {
	b := &builder{}
	b.add(manifest.Entry{Path: ".", Type: manifest.TypeDir, Mode: 0o755})
	return b
}

func (b *builder) add(e manifest.Entry) int {
	e.Index = len(b.m.Entries)
	if e.LinkTo == 0 && e.Index != 0 {
		e.LinkTo = manifest.NoLink
	}
	if e.Index == 0 {
		e.LinkTo = manifest.NoLink
	}
	if e.Nlink == 0 {
		e.Nlink = 1
	}
	if e.MtimeNs == 0 {
		e.MtimeNs = testMtime + int64(e.Index)
	}
	b.m.Entries = append(b.m.Entries, e)
	return e.Index
}

func (b *builder) dir(p string, mode uint32) int {
	return b.add(manifest.Entry{Path: p, Type: manifest.TypeDir, Mode: mode})
}

func (b *builder) file(p string, mode uint32, size int64) int {
	return b.add(manifest.Entry{Path: p, Type: manifest.TypeFile, Mode: mode, Size: size})
}

// testDir makes a directory other users can traverse (t.TempDir's are
// 0700), removed at cleanup.
func testDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "lazyfs-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func requireRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// mountTest mounts m at a new directory and unmounts it at cleanup, lazily
// if it is still busy, so no test leaves a mount behind.
func mountTest(t testing.TB, m *manifest.Manifest, b Backend, opts Options) (*FS, string) {
	t.Helper()
	requireRoot(t)
	mnt := filepath.Join(testDir(t), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	fsys, err := Mount(mnt, m, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsys.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			detach(t, mnt)
		}
	})
	return fsys, mnt
}

// detach is the last resort: a lazy unmount.
func detach(t testing.TB, dir string) {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		t.Errorf("lazy unmount %s: %v", dir, err)
	}
}

func equalBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Errorf("%s: got %d bytes, want %d; first difference at %d", what, len(got), len(want), i)
	}
}
