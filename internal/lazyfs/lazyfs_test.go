package lazyfs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// fixture is the hand-built test tree: a manifest, a backend holding its
// contents (some local, some remote) and every file's expected content.
type fixture struct {
	m       *manifest.Manifest
	b       *fakeBackend
	idx     map[string]int    // entry index by path
	content map[string][]byte // expected content by path (all paths of a hard-link group)
}

const bigSize = 1<<30 + 12345

func newFixture(t testing.TB) *fixture {
	bld := newBuilder()
	f := &fixture{b: newFakeBackend(t), idx: map[string]int{}, content: map[string][]byte{}}
	remote := func(p string, mode uint32, data []byte) int {
		i := bld.file(p, mode, int64(len(data)))
		f.idx[p], f.content[p] = i, data
		f.b.content[i] = data
		return i
	}
	local := func(p string, mode uint32, data []byte) int {
		i := bld.file(p, mode, int64(len(data)))
		f.idx[p], f.content[p] = i, data
		f.b.makeLocal(i, data)
		return i
	}
	dir := func(p string, mode uint32) int {
		i := bld.dir(p, mode)
		f.idx[p] = i
		return i
	}
	other := func(e manifest.Entry) int {
		i := bld.add(e)
		f.idx[e.Path] = i
		return i
	}
	member := func(p string, leader int, nlink uint32) {
		lp := bld.m.Entries[leader].Path
		e := bld.m.Entries[leader]
		e.Path, e.LinkTo, e.Nlink, e.Xattrs = p, leader, nlink, nil
		f.idx[p] = bld.add(e)
		f.content[p] = f.content[lp]
	}

	dir("dir", 0o755)
	remote("dir/remote.txt", 0o644, randBytes(1, 300_000))
	local("dir/local.bin", 0o644, randBytes(2, 200_000))
	remote("dir/later.bin", 0o644, randBytes(3, 2<<20))
	remote("empty", 0o644, nil)
	dir("emptydir", 0o755)
	other(manifest.Entry{Path: "link", Type: manifest.TypeSymlink, Mode: 0o777, Target: "dir/remote.txt"})
	other(manifest.Entry{Path: "dangling", Type: manifest.TypeSymlink, Mode: 0o777, Target: "/nonexistent/ü target"})

	dir("hl", 0o755)
	a := remote("hl/a", 0o644, randBytes(4, 5000))
	bld.m.Entries[a].Nlink = 2
	member("hl/b", a, 2)

	dir("g3", 0o755)
	x := local("g3/x", 0o640, randBytes(5, 70_000))
	bld.m.Entries[x].Nlink = 3
	member("g3/y", x, 3)
	member("dir/z", x, 3)

	other(manifest.Entry{Path: "fifo", Type: manifest.TypeFIFO, Mode: 0o644, UID: 1000, GID: 1000})
	other(manifest.Entry{Path: "null", Type: manifest.TypeChar, Mode: 0o666, Rdev: unix.Mkdev(1, 3)})
	other(manifest.Entry{Path: "loop", Type: manifest.TypeBlock, Mode: 0o660, GID: 6, Rdev: unix.Mkdev(7, 300)})

	s := remote("secret", 0o600, []byte("top secret\n"))
	bld.m.Entries[s].UID, bld.m.Entries[s].GID = 1000, 1000
	g := remote("group", 0o640, []byte("group data\n"))
	bld.m.Entries[g].GID = 1000
	remote("mode0", 0, []byte("nobody\n"))

	sg := dir("sgid", 0o2775)
	bld.m.Entries[sg].GID = 50
	remote("sgid/with space é.txt", 0o644, []byte("space\n"))
	dir("ünïcødé dir", 0o755)
	remote("ünïcødé dir/файл 日本", 0o644, []byte("unicode\n"))
	dir("sticky", 0o1777)

	xf := remote("xattr.txt", 0o644, []byte("x\n"))
	bld.m.Entries[xf].Xattrs = map[string][]byte{
		"user.comment": []byte("hi"),
		"user.empty":   {},
	}
	od := dir("opaque", 0o755)
	remote("opaque/child", 0o644, []byte("child\n"))

	big := bld.file("big.sparse", 0o644, bigSize)
	f.idx["big.sparse"] = big
	f.b.gen[big] = genContent

	old := remote("old", 0o644, []byte("old\n"))
	bld.m.Entries[old].MtimeNs = -(10*365*86400*1e9 + 5) // 1960

	if id, err := os.ReadFile("/usr/bin/id"); err == nil {
		sid := remote("suid-id", 0o4755, id)
		bld.m.Entries[sid].UID = 0
	}
	remote("exec.sh", 0o755, []byte("#!/bin/sh\necho hi\n"))

	f.m = &bld.m
	if _, err := f.m.Tree(); err != nil {
		t.Fatal(err)
	}
	// Xattrs outside the user namespace, which Validate refuses, as if the
	// manifest had been altered after validation: they must still not be
	// served, above all not the overlay's instructions.
	for k, v := range map[string][]byte{
		"trusted.overlay.opaque": []byte("y"),
		"trusted.foo":            []byte("bar"),
		"security.capability":    {1, 0, 0, 2},
	} {
		bld.m.Entries[xf].Xattrs[k] = v
	}
	bld.m.Entries[od].Xattrs = map[string][]byte{"trusted.overlay.opaque": []byte("y")}
	return f
}

func (f *fixture) entry(p string) *manifest.Entry { return &f.m.Entries[f.idx[p]] }

func TestMount(t *testing.T) {
	fx := newFixture(t)
	fsys, mnt := mountTest(t, fx.m, fx.b, Options{})
	es := fx.m.Entries

	t.Run("listing", func(t *testing.T) {
		var got []string
		err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(mnt, p)
			got = append(got, rel)
			// The type in the listing matches the entry's.
			if want := es[fx.idx[rel]].Type.UnixType(); rel != "." && uint32(d.Type()&fs.ModeType) != uint32(fileModeType(want)) {
				t.Errorf("%s: listed type %v, want %o", rel, d.Type(), want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, e := range es {
			want = append(want, e.Path)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("walk:\n got %q\nwant %q", got, want)
		}

		// Raw listing: ".", "..", then names in byte order, with the
		// inode numbers the entries report.
		raw := readDirRaw(t, filepath.Join(mnt, "dir"))
		names := make([]string, len(raw))
		for i, d := range raw {
			names[i] = d.name
		}
		wantNames := []string{".", "..", "later.bin", "local.bin", "remote.txt", "z"}
		if !slices.Equal(names, wantNames) {
			t.Errorf("raw listing of dir: got %q want %q", names, wantNames)
		}
		wantIno := map[string]uint64{".": 2, "..": 1, "z": uint64(fx.idx["g3/x"]) + 1}
		for _, d := range raw {
			if w, ok := wantIno[d.name]; ok && d.ino != w {
				t.Errorf("raw listing of dir: %s has ino %d, want %d", d.name, d.ino, w)
			}
		}
		// A second listing (now from the kernel's cache) is the same.
		raw2 := readDirRaw(t, filepath.Join(mnt, "dir"))
		if !slices.Equal(raw, raw2) {
			t.Errorf("second listing differs: %v vs %v", raw, raw2)
		}
	})

	t.Run("lstat", func(t *testing.T) {
		subdirs := map[int]uint32{}
		for _, e := range es[1:] {
			if e.Type == manifest.TypeDir {
				if d := path.Dir(e.Path); d == "." {
					subdirs[0]++
				} else {
					subdirs[fx.idx[d]]++
				}
			}
		}
		for _, e := range es {
			t.Run(e.Path, func(t *testing.T) {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(mnt, e.Path), &st); err != nil {
					t.Fatal(err)
				}
				lead := e
				if e.LinkTo != manifest.NoLink {
					lead = es[e.LinkTo]
				}
				wantMode := e.Type.UnixType() | e.Mode
				if st.Mode != wantMode {
					t.Errorf("mode %o, want %o", st.Mode, wantMode)
				}
				if st.Uid != e.UID || st.Gid != e.GID {
					t.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, e.UID, e.GID)
				}
				if want := uint64(lead.Index) + 1; st.Ino != want {
					t.Errorf("ino %d, want %d", st.Ino, want)
				}
				var wantSize int64
				switch e.Type {
				case manifest.TypeFile:
					wantSize = lead.Size
				case manifest.TypeSymlink:
					wantSize = int64(len(e.Target))
				}
				if st.Size != wantSize {
					t.Errorf("size %d, want %d", st.Size, wantSize)
				}
				if want := (wantSize + 511) / 512; st.Blocks != want || st.Blksize != 4096 {
					t.Errorf("blocks %d blksize %d, want %d 4096", st.Blocks, st.Blksize, want)
				}
				wantNlink := uint64(e.Nlink)
				if e.Type == manifest.TypeDir {
					wantNlink = 2 + uint64(subdirs[e.Index])
				}
				if st.Nlink != wantNlink {
					t.Errorf("nlink %d, want %d", st.Nlink, wantNlink)
				}
				for what, ts := range map[string]unix.Timespec{"mtime": st.Mtim, "atime": st.Atim, "ctime": st.Ctim} {
					if got := ts.Nano(); got != lead.MtimeNs {
						t.Errorf("%s %d, want %d", what, got, lead.MtimeNs)
					}
				}
				if e.Type == manifest.TypeChar || e.Type == manifest.TypeBlock {
					if st.Rdev != e.Rdev {
						t.Errorf("rdev %d:%d, want %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(e.Rdev), unix.Minor(e.Rdev))
					}
				}
			})
		}
	})

	t.Run("hardlinks", func(t *testing.T) {
		for _, group := range [][]string{{"hl/a", "hl/b"}, {"g3/x", "g3/y", "dir/z"}} {
			var first unix.Stat_t
			for k, p := range group {
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(mnt, p), &st); err != nil {
					t.Fatal(err)
				}
				if st.Nlink != uint64(len(group)) {
					t.Errorf("%s: nlink %d, want %d", p, st.Nlink, len(group))
				}
				if k == 0 {
					first = st
				} else if st.Ino != first.Ino || st.Dev != first.Dev {
					t.Errorf("%s: ino %d, want %d like %s", p, st.Ino, first.Ino, group[0])
				}
				got, err := os.ReadFile(filepath.Join(mnt, p))
				if err != nil {
					t.Fatal(err)
				}
				equalBytes(t, p, got, fx.content[p])
			}
		}
		// Content of a group is read through its first entry only.
		if n := len(fx.b.readAtOffsets(fx.idx["hl/b"])); n != 0 {
			t.Errorf("ReadAt called %d times for hl/b, want 0 (hl/a carries the content)", n)
		}
		if n := len(fx.b.readAtOffsets(fx.idx["hl/a"])); n == 0 {
			t.Errorf("ReadAt not called for hl/a")
		}
	})

	t.Run("readlink", func(t *testing.T) {
		for _, p := range []string{"link", "dangling"} {
			got, err := os.Readlink(filepath.Join(mnt, p))
			if err != nil {
				t.Fatal(err)
			}
			if got != fx.entry(p).Target {
				t.Errorf("%s -> %q, want %q", p, got, fx.entry(p).Target)
			}
		}
		got, err := os.ReadFile(filepath.Join(mnt, "link"))
		if err != nil {
			t.Fatal(err)
		}
		equalBytes(t, "through link", got, fx.content["dir/remote.txt"])
	})

	t.Run("xattrs", func(t *testing.T) {
		p := filepath.Join(mnt, "xattr.txt")
		buf := make([]byte, 256)
		n, err := unix.Getxattr(p, "user.comment", buf)
		if err != nil || string(buf[:n]) != "hi" {
			t.Errorf("user.comment: %q, %v", buf[:n], err)
		}
		if n, err := unix.Getxattr(p, "user.comment", nil); err != nil || n != 2 {
			t.Errorf("user.comment size query: %d, %v", n, err)
		}
		if _, err := unix.Getxattr(p, "user.comment", make([]byte, 1)); !errors.Is(err, unix.ERANGE) {
			t.Errorf("user.comment into 1 byte: %v, want ERANGE", err)
		}
		if n, err := unix.Getxattr(p, "user.empty", buf); err != nil || n != 0 {
			t.Errorf("user.empty: %d, %v", n, err)
		}
		for _, name := range []string{"trusted.overlay.opaque", "trusted.foo", "security.capability", "user.missing", "system.posix_acl_access"} {
			if _, err := unix.Getxattr(p, name, buf); !errors.Is(err, unix.ENODATA) {
				t.Errorf("%s: %v, want ENODATA", name, err)
			}
		}
		if _, err := unix.Getxattr(filepath.Join(mnt, "opaque"), "trusted.overlay.opaque", buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("opaque dir: trusted.overlay.opaque: %v, want ENODATA", err)
		}
		n, err = unix.Listxattr(p, buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != "user.comment\x00user.empty\x00" {
			t.Errorf("listxattr %q", got)
		}
		if n, err := unix.Listxattr(filepath.Join(mnt, "opaque"), buf); err != nil || n != 0 {
			t.Errorf("listxattr opaque dir: %q, %v; want nothing", buf[:n], err)
		}
	})

	t.Run("read remote", func(t *testing.T) {
		before := fsys.Stats().RemoteReads
		for _, p := range []string{"dir/remote.txt", "secret", "sgid/with space é.txt", "ünïcødé dir/файл 日本", "opaque/child"} {
			got, err := os.ReadFile(filepath.Join(mnt, p))
			if err != nil {
				t.Fatal(err)
			}
			equalBytes(t, p, got, fx.content[p])
			if len(fx.b.readAtOffsets(fx.idx[p])) == 0 {
				t.Errorf("%s: ReadAt not called", p)
			}
		}
		if fsys.Stats().RemoteReads == before {
			t.Errorf("remote read counter did not move")
		}
		// An empty file needs no fetch at all.
		got, err := os.ReadFile(filepath.Join(mnt, "empty"))
		if err != nil || len(got) != 0 {
			t.Errorf("empty: %q, %v", got, err)
		}
		if n := len(fx.b.readAtOffsets(fx.idx["empty"])); n != 0 {
			t.Errorf("empty: %d ReadAt calls", n)
		}
	})

	t.Run("read local", func(t *testing.T) {
		fx.b.resetReadAts()
		before := fsys.Stats().LocalReads
		for _, p := range []string{"dir/local.bin", "g3/y", "dir/z"} {
			got, err := os.ReadFile(filepath.Join(mnt, p))
			if err != nil {
				t.Fatal(err)
			}
			equalBytes(t, p, got, fx.content[p])
		}
		if n := fx.b.totalReadAts(); n != 0 {
			t.Errorf("ReadAt called %d times for local files", n)
		}
		if fsys.Stats().LocalReads == before {
			t.Errorf("local read counter did not move")
		}
	})

	t.Run("range first", func(t *testing.T) {
		f, err := os.Open(filepath.Join(mnt, "big.sparse"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		const off = 1<<30 + 100
		got := make([]byte, 4096)
		if n, err := f.ReadAt(got, off); err != nil || n != len(got) {
			t.Fatalf("read at %d: %d, %v", off, n, err)
		}
		want := make([]byte, len(got))
		genContent(want, off)
		equalBytes(t, "big.sparse at 1 GiB", got, want)
		offs := fx.b.readAtOffsets(fx.idx["big.sparse"])
		if len(offs) == 0 {
			t.Fatal("ReadAt not called")
		}
		if offs[0] > off || offs[0] < off-(1<<20) {
			t.Errorf("first ReadAt at %d, want the page holding %d", offs[0], int64(off))
		}
		for _, o := range offs {
			if o < off-(1<<20) {
				t.Errorf("ReadAt at %d: fetched far before the requested range", o)
			}
		}
		t.Logf("ReadAt offsets for a 4 KiB read at %d: %v", int64(off), offs)
		// A read across the end is short.
		got = make([]byte, 200)
		n, err := f.ReadAt(got, bigSize-100)
		if n != 100 {
			t.Errorf("read across end: %d, %v; want 100 bytes", n, err)
		}
		genContent(want[:100], bigSize-100)
		equalBytes(t, "tail", got[:n], want[:100])
	})

	t.Run("read-only", func(t *testing.T) {
		p := func(s string) string { return filepath.Join(mnt, s) }
		tests := []struct {
			name string
			op   func() error
		}{
			{"open O_RDWR", func() error { f, err := os.OpenFile(p("dir/remote.txt"), os.O_RDWR, 0); closeIf(f); return err }},
			{"open O_WRONLY", func() error { f, err := os.OpenFile(p("dir/local.bin"), os.O_WRONLY, 0); closeIf(f); return err }},
			{"open O_TRUNC", func() error { f, err := os.OpenFile(p("secret"), os.O_RDONLY|os.O_TRUNC, 0); closeIf(f); return err }},
			{"create", func() error { f, err := os.Create(p("new")); closeIf(f); return err }},
			{"write", func() error { return os.WriteFile(p("dir/remote.txt"), []byte("x"), 0o644) }},
			{"mkdir", func() error { return os.Mkdir(p("newdir"), 0o755) }},
			{"mknod", func() error { return unix.Mkfifo(p("newfifo"), 0o644) }},
			{"symlink", func() error { return os.Symlink("x", p("newlink")) }},
			{"link", func() error { return os.Link(p("dir/remote.txt"), p("newhard")) }},
			{"unlink", func() error { return os.Remove(p("dir/remote.txt")) }},
			{"rmdir", func() error { return os.Remove(p("emptydir")) }},
			{"rename", func() error { return os.Rename(p("dir/remote.txt"), p("moved")) }},
			{"chmod", func() error { return os.Chmod(p("dir/remote.txt"), 0o600) }},
			{"chown", func() error { return os.Lchown(p("dir/remote.txt"), 1, 1) }},
			{"truncate", func() error { return os.Truncate(p("dir/remote.txt"), 0) }},
			{"utimes", func() error { return os.Chtimes(p("dir/remote.txt"), time.Now(), time.Now()) }},
			{"setxattr", func() error { return unix.Setxattr(p("xattr.txt"), "user.new", []byte("v"), 0) }},
			{"removexattr", func() error { return unix.Removexattr(p("xattr.txt"), "user.comment") }},
		}
		for _, tc := range tests {
			if err := tc.op(); !errors.Is(err, syscall.EROFS) {
				t.Errorf("%s: %v, want EROFS", tc.name, err)
			}
		}
		// Nothing changed.
		got, err := os.ReadFile(p("dir/remote.txt"))
		if err != nil {
			t.Fatal(err)
		}
		equalBytes(t, "after refused writes", got, fx.content["dir/remote.txt"])
	})

	t.Run("lookup errors", func(t *testing.T) {
		if _, err := os.Lstat(filepath.Join(mnt, "nope")); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("missing name: %v", err)
		}
		if _, err := os.Lstat(filepath.Join(mnt, "dir/remote.txt/x")); !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("below a file: %v", err)
		}
	})

	t.Run("statfs", func(t *testing.T) {
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err != nil {
			t.Fatal(err)
		}
		_, total := fx.m.Totals()
		if st.Bsize != 4096 || st.Blocks != uint64(total+4095)/4096 || st.Files != uint64(len(es)) || st.Bfree != 0 {
			t.Errorf("statfs: bsize %d blocks %d files %d bfree %d; want 4096 %d %d 0", st.Bsize, st.Blocks, st.Files, st.Bfree, (total+4095)/4096, len(es))
		}
		if st.Type != unix.FUSE_SUPER_MAGIC {
			t.Errorf("f_type %#x", st.Type)
		}
		for _, flag := range []int64{unix.ST_RDONLY, unix.ST_NOSUID, unix.ST_NODEV} {
			if st.Flags&flag == 0 {
				t.Errorf("mount flags %#x lack %#x", st.Flags, flag)
			}
		}
		out, err := exec.Command("df", "-h", mnt).CombinedOutput()
		if err != nil {
			t.Errorf("df: %v\n%s", err, out)
		}
		t.Logf("df:\n%s", out)
	})

	t.Run("becomes local while open", func(t *testing.T) {
		p := "dir/later.bin"
		i := fx.idx[p]
		f, err := os.Open(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		equalBytes(t, "first page", buf, fx.content[p][:4096])
		if len(fx.b.readAtOffsets(i)) == 0 {
			t.Fatal("ReadAt not called while remote")
		}
		fx.b.makeLocal(i, fx.content[p])
		fetched := len(fx.b.readAtOffsets(i))
		localBefore := fsys.Stats().LocalReads
		const off = 3 << 19 // far past any readahead of the first read
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		equalBytes(t, "page after becoming local", buf, fx.content[p][off:off+4096])
		if n := len(fx.b.readAtOffsets(i)); n != fetched {
			t.Errorf("ReadAt called %d more times after the file became local", n-fetched)
		}
		if fsys.Stats().LocalReads == localBefore {
			t.Errorf("open handle did not switch to the local copy")
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		paths := []string{"dir/remote.txt", "dir/local.bin", "hl/a", "hl/b", "g3/x", "dir/z", "dir/later.bin"}
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for r := range 20 {
					p := paths[(w+r)%len(paths)]
					f, err := os.Open(filepath.Join(mnt, p))
					if err != nil {
						t.Error(err)
						return
					}
					// Drop the cached pages so reads reach the server.
					if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
						t.Error(err)
						f.Close()
						return
					}
					var got bytes.Buffer
					_, err = got.ReadFrom(f)
					f.Close()
					if err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(got.Bytes(), fx.content[p]) {
						t.Errorf("%s: wrong content under concurrency", p)
					}
				}
			})
		}
		wg.Wait()
	})
}

func closeIf(f *os.File) {
	if f != nil {
		f.Close()
	}
}

func fileModeType(bits uint32) fs.FileMode {
	switch bits {
	case syscall.S_IFDIR:
		return fs.ModeDir
	case syscall.S_IFLNK:
		return fs.ModeSymlink
	case syscall.S_IFIFO:
		return fs.ModeNamedPipe
	case syscall.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		return fs.ModeDevice
	}
	return 0
}

type rawDirent struct {
	name string
	ino  uint64
	typ  uint8
}

// readDirRaw lists a directory with getdents64, keeping "." and "..",
// which os and syscall.ParseDirent drop.
func readDirRaw(t testing.TB, dir string) []rawDirent {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var out []rawDirent
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
			ino := *(*uint64)(unsafe.Pointer(&b[0]))
			reclen := *(*uint16)(unsafe.Pointer(&b[16]))
			typ := b[18]
			name := b[19:reclen]
			name = name[:bytes.IndexByte(name, 0)]
			out = append(out, rawDirent{name: string(name), ino: ino, typ: typ})
			b = b[reclen:]
		}
	}
}

// runAs runs argv as uid:gid (with the given supplementary groups) and
// returns its stdout and stderr. The helper is a system binary, not on the
// FUSE mount, so the fork cannot deadlock against our own server.
func runAs(t *testing.T, uid, gid uint32, groups []uint32, argv ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	// strerror(EACCES) in the C locale is "Permission denied".
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func TestPermissions(t *testing.T) {
	fx := newFixture(t)
	_, mnt := mountTest(t, fx.m, fx.b, Options{})
	p := func(s string) string { return filepath.Join(mnt, s) }
	tests := []struct {
		name   string
		uid    uint32
		groups []uint32
		path   string
		ok     bool
	}{
		{"owner reads 0600", 1000, nil, "secret", true},
		{"other user denied 0600", 2000, nil, "secret", false},
		{"other user reads 0644", 2000, nil, "dir/remote.txt", true},
		{"group member reads 0640", 2000, []uint32{1000}, "group", true},
		{"non-member denied 0640", 2000, nil, "group", false},
		{"owner-less mode 0 denied", 1000, nil, "mode0", false},
		{"names with spaces", 2000, nil, "sgid/with space é.txt", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runAs(t, tc.uid, tc.uid, tc.groups, "/bin/cat", p(tc.path))
			if tc.ok {
				if err != nil {
					t.Fatalf("cat as %d: %v: %s", tc.uid, err, errOut)
				}
				if out != string(fx.content[tc.path]) {
					t.Errorf("cat as %d: %q", tc.uid, out)
				}
				return
			}
			if err == nil || !strings.Contains(errOut, "Permission denied") {
				t.Errorf("cat as %d: err %v, stderr %q; want Permission denied", tc.uid, err, errOut)
			}
		})
	}
	t.Run("root reads mode 0", func(t *testing.T) {
		got, err := os.ReadFile(p("mode0"))
		if err != nil || string(got) != "nobody\n" {
			t.Errorf("%q, %v", got, err)
		}
	})
}

func TestTreeErrors(t *testing.T) {
	ok := func() []manifest.Entry {
		return []manifest.Entry{
			{Index: 0, Path: ".", Type: manifest.TypeDir, LinkTo: manifest.NoLink, Nlink: 1},
			{Index: 1, Path: "d", Type: manifest.TypeDir, LinkTo: manifest.NoLink, Nlink: 1},
			{Index: 2, Path: "d/f", Type: manifest.TypeFile, LinkTo: manifest.NoLink, Nlink: 1},
		}
	}
	if _, err := newTree(&manifest.Manifest{Entries: ok()}); err != nil {
		t.Fatalf("valid manifest: %v", err)
	}
	tests := []struct {
		name string
		edit func([]manifest.Entry) []manifest.Entry
	}{
		{"empty", func([]manifest.Entry) []manifest.Entry { return nil }},
		{"root not first", func(es []manifest.Entry) []manifest.Entry { es[0].Path = "x"; return es }},
		{"root not dir", func(es []manifest.Entry) []manifest.Entry { es[0].Type = manifest.TypeFile; return es }},
		{"bad index", func(es []manifest.Entry) []manifest.Entry { es[2].Index = 5; return es }},
		{"child before parent", func(es []manifest.Entry) []manifest.Entry {
			es[1], es[2] = es[2], es[1]
			es[1].Index, es[2].Index = 1, 2
			return es
		}},
		{"parent is a file", func(es []manifest.Entry) []manifest.Entry {
			return append(es, manifest.Entry{Index: 3, Path: "d/f/g", Type: manifest.TypeFile, LinkTo: manifest.NoLink, Nlink: 1})
		}},
		{"duplicate", func(es []manifest.Entry) []manifest.Entry {
			return append(es, manifest.Entry{Index: 3, Path: "d/f", Type: manifest.TypeFile, LinkTo: manifest.NoLink, Nlink: 1})
		}},
		{"duplicate dir", func(es []manifest.Entry) []manifest.Entry {
			return append(es, manifest.Entry{Index: 3, Path: "d", Type: manifest.TypeDir, LinkTo: manifest.NoLink, Nlink: 1})
		}},
		{"dotdot", func(es []manifest.Entry) []manifest.Entry { es[2].Path = "d/.."; return es }},
		{"dot component", func(es []manifest.Entry) []manifest.Entry { es[2].Path = "./d/f"; return es }},
		{"absolute", func(es []manifest.Entry) []manifest.Entry { es[1].Path = "/d"; return es }},
		{"trailing slash", func(es []manifest.Entry) []manifest.Entry { es[2].Path = "d/f/"; return es }},
		{"empty component", func(es []manifest.Entry) []manifest.Entry { es[2].Path = "d//f"; return es }},
		{"nul", func(es []manifest.Entry) []manifest.Entry { es[2].Path = "d/f\x00"; return es }},
		{"unknown type", func(es []manifest.Entry) []manifest.Entry { es[2].Type = 99; return es }},
		{"negative size", func(es []manifest.Entry) []manifest.Entry { es[2].Size = -1; return es }},
		{"link forward", func(es []manifest.Entry) []manifest.Entry { es[2].LinkTo = 2; return es }},
		{"link to dir", func(es []manifest.Entry) []manifest.Entry {
			return append(es, manifest.Entry{Index: 3, Path: "g", Type: manifest.TypeDir, LinkTo: 1, Nlink: 1})
		}},
		{"link type mismatch", func(es []manifest.Entry) []manifest.Entry {
			return append(es, manifest.Entry{Index: 3, Path: "g", Type: manifest.TypeSymlink, Target: "d/f", LinkTo: 2, Nlink: 1})
		}},
		{"link to member", func(es []manifest.Entry) []manifest.Entry {
			es = append(es, manifest.Entry{Index: 3, Path: "g", Type: manifest.TypeFile, LinkTo: 2, Nlink: 1})
			return append(es, manifest.Entry{Index: 4, Path: "h", Type: manifest.TypeFile, LinkTo: 3, Nlink: 1})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newTree(&manifest.Manifest{Entries: tc.edit(ok())}); err == nil {
				t.Errorf("accepted")
			} else {
				t.Log(err)
			}
		})
	}
}

func TestUnmountBusy(t *testing.T) {
	fx := newFixture(t)
	fsys, mnt := mountTest(t, fx.m, fx.b, Options{})
	f, err := os.Open(filepath.Join(mnt, "dir/remote.txt"))
	if err != nil {
		t.Fatal(err)
	}
	err = fsys.Unmount()
	t.Logf("Unmount with a file open: %v", err)
	if !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Unmount with a file open: %v, want EBUSY", err)
	}
	// Still serving.
	if _, err := f.ReadAt(make([]byte, 10), 0); err != nil {
		t.Errorf("read after refused unmount: %v", err)
	}
	f.Close()
	if err := fsys.Unmount(); err != nil {
		t.Errorf("Unmount after close: %v", err)
	}
	if err := fsys.Unmount(); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
}
