package lazyfs

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

const benchSize = 512 << 20

// BenchmarkReadLocal reads a 512 MiB local file end to end: natively,
// through the FUSE mount with and without passthrough, and through an
// overlay on top of it. "warm" rereads with every cache warm, which is the
// steady state of a file read repeatedly (with KEEP_CACHE the FUSE page
// cache answers); "fusecold" drops the FUSE (or overlay) inode's pages
// before each pass while the backing file stays cached, which isolates the
// cost of serving READ requests.
func BenchmarkReadLocal(b *testing.B) {
	requireRoot(b)
	bk := newFakeBackend(b)
	bld := newBuilder()
	idx := bld.file("big", 0o644, benchSize)
	bk.makeLocal(idx, randBytes(9, benchSize))
	native := bk.local[idx]
	m := &bld.m

	type variant struct {
		name        string
		native      bool
		passthrough bool
		overlay     bool
		cold        bool
	}
	var vs []variant
	for _, cold := range []bool{false, true} {
		if !cold {
			vs = append(vs, variant{name: "native/warm", native: true})
		}
		for _, ov := range []bool{false, true} {
			for _, pt := range []bool{false, true} {
				name := map[bool]string{false: "fuse", true: "overlay+fuse"}[ov]
				if pt {
					name += "-passthrough"
				}
				name += map[bool]string{false: "/warm", true: "/fusecold"}[cold]
				vs = append(vs, variant{name: name, passthrough: pt, overlay: ov, cold: cold})
			}
		}
	}
	buf := make([]byte, 1<<20)
	for _, v := range vs {
		b.Run(v.name, func(b *testing.B) {
			path := native
			if !v.native {
				_, mnt := mountTest(b, m, bk, Options{Passthrough: v.passthrough})
				if v.overlay {
					mnt, _ = mountOverlay(b, mnt, overlayOptions)
				}
				path = filepath.Join(mnt, "big")
			}
			readOnce(b, path, buf, false) // warm every cache
			b.SetBytes(benchSize)
			b.ResetTimer()
			for b.Loop() {
				readOnce(b, path, buf, v.cold)
			}
		})
	}
}

func readOnce(b *testing.B, path string, buf []byte, cold bool) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if cold {
		b.StopTimer()
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	var total int64
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if total != benchSize {
		b.Fatalf("read %d bytes, want %d", total, benchSize)
	}
}

// TestLargeTree checks the index and lazy inodes at scale: a 300k-entry
// manifest, indexed, mounted, stat'ed at random and walked completely.
func TestLargeTree(t *testing.T) {
	if testing.Short() {
		t.Skip("large")
	}
	const dirs, perDir = 1000, 300
	bld := newBuilder()
	for d := range dirs {
		dp := fmt.Sprintf("d%04d", d)
		bld.dir(dp, 0o755)
		for f := range perDir {
			bld.add(manifest.Entry{Path: fmt.Sprintf("%s/f%03d", dp, perDir-1-f), Type: manifest.TypeFile, Mode: 0o644, Size: int64(f)})
		}
	}
	m := &bld.m
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	t0 := time.Now()
	tr, err := newTree(m)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	t.Logf("index of %d entries: %v, %.1f MB", len(m.Entries), took, float64(ms1.HeapAlloc-ms0.HeapAlloc)/1e6)
	runtime.KeepAlive(tr)

	_, mnt := mountTest(t, m, newFakeBackend(t), Options{})
	t0 = time.Now()
	for k := range 1000 {
		p := fmt.Sprintf("d%04d/f%03d", (k*7919)%dirs, (k*31)%perDir)
		st, err := os.Stat(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(perDir-1-(k*31)%perDir) {
			t.Fatalf("%s: size %d", p, st.Size())
		}
	}
	t.Logf("1000 cold stats: %v", time.Since(t0))
	t0 = time.Now()
	n := 0
	err = filepath.WalkDir(mnt, func(_ string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(m.Entries) {
		t.Errorf("walk saw %d entries, want %d", n, len(m.Entries))
	}
	t.Logf("walk of %d entries: %v", n, time.Since(t0))
}
