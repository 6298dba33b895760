package lazyfs

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPassthrough(t *testing.T) {
	fx := newFixture(t)
	fsys, mnt := mountTest(t, fx.m, fx.b, Options{Passthrough: true})
	t.Logf("kernel offers passthrough: %v", fsys.PassthroughOffered())
	p := func(s string) string { return filepath.Join(mnt, s) }
	readAll := func(f *os.File) []byte {
		t.Helper()
		b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	got, err := os.ReadFile(p("dir/local.bin"))
	if err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "local.bin", got, fx.content["dir/local.bin"])
	active := fsys.Stats().LocalReads == 0
	t.Logf("passthrough active (local file read without a FUSE READ): %v", active)
	if !active && fsys.PassthroughOffered() {
		t.Errorf("kernel offers passthrough but the local file was read through the server (%d READs)", fsys.Stats().LocalReads)
	}

	t.Run("mmap", func(t *testing.T) {
		f, err := os.Open(p("g3/x"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		data, err := syscall.Mmap(int(f.Fd()), 0, len(fx.content["g3/x"]), syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := syscall.Munmap(data); err != nil {
				t.Error(err)
			}
		}()
		equalBytes(t, "mmap g3/x", data, fx.content["g3/x"])
	})

	t.Run("hard link members share the backing file", func(t *testing.T) {
		var fs []*os.File
		for _, q := range []string{"g3/x", "g3/y", "dir/z"} {
			f, err := os.Open(p(q))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fs = append(fs, f)
		}
		for i, f := range fs {
			equalBytes(t, "member "+string(rune('0'+i)), readAll(f), fx.content["g3/x"])
		}
	})

	t.Run("remote handle open when the file becomes local", func(t *testing.T) {
		// The kernel fails an open with EIO if it would mix a page-cache
		// handle and a passthrough handle on one inode.
		q := "dir/later.bin"
		want := fx.content[q]
		remote, err := os.Open(p(q))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		if _, err := remote.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		fx.b.makeLocal(fx.idx[q], want)
		second, err := os.Open(p(q))
		if err != nil {
			remote.Close()
			t.Fatalf("open while a remote handle is open: %v", err)
		}
		equalBytes(t, "second handle", readAll(second), want)
		equalBytes(t, "first handle", readAll(remote), want)
		remote.Close()
		second.Close()

		// RELEASE reaches the server asynchronously after close, so the
		// server may still count the closed handles for a moment and
		// (safely) not offer passthrough yet; retry briefly.
		passed := false
		for try := 0; try < 100 && !passed; try++ {
			before := fsys.Stats().LocalReads
			third, err := os.Open(p(q))
			if err != nil {
				t.Fatalf("open after the others closed: %v", err)
			}
			if err := unix.Fadvise(int(third.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
				t.Fatal(err)
			}
			equalBytes(t, "third handle", readAll(third), want)
			third.Close()
			passed = fsys.Stats().LocalReads == before
			if !passed {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if active && !passed {
			t.Errorf("reopening never passed through")
		}
	})

	t.Run("concurrent opens", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 20 {
					for _, q := range []string{"dir/local.bin", "g3/y", "dir/later.bin", "dir/remote.txt"} {
						got, err := os.ReadFile(p(q))
						if err != nil {
							t.Error(err)
							return
						}
						if string(got) != string(fx.content[q]) {
							t.Errorf("%s: wrong content", q)
						}
					}
				}
			})
		}
		wg.Wait()
	})
}

func TestReadAhead(t *testing.T) {
	for _, kb := range []int{0, 1024} {
		t.Run("kb="+strconv.Itoa(kb), func(t *testing.T) {
			fx := newFixture(t)
			fsys, mnt := mountTest(t, fx.m, fx.b, Options{ReadAheadKB: kb})
			f, err := os.Open(filepath.Join(mnt, "big.sparse"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			const n = 32 << 20
			got := make([]byte, n)
			if _, err := io.ReadFull(f, got); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, n)
			genContent(want, 0)
			equalBytes(t, "first 32 MiB", got, want)
			reads := fsys.Stats().RemoteReads
			t.Logf("read_ahead_kb %d: %d READs for %d MiB (%d KiB each)", kb, reads, n>>20, n/1024/int(reads))
			if kb == 1024 && reads > n/(512<<10) {
				t.Errorf("%d READs, want requests of about 1 MiB", reads)
			}
		})
	}
}
