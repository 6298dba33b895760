package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// want describes one expected entry; link names the first member of the
// entry's hard-link group by path.
type want struct {
	path   string
	typ    Type
	mode   uint32
	uid    uint32
	size   int64
	target string
	rdev   uint64
	link   string
	nlink  uint32
	xattrs map[string][]byte
}

func TestWalk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chown, setuid bits, mknod")
	}
	dir := t.TempDir()
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o644))
	at := func(p string) string { return filepath.Join(dir, filepath.FromSlash(p)) }

	// unix.Chmod takes raw modes: os.FileMode has its own setuid bits.
	mkdir := func(p string, mode uint32) {
		must(t, os.Mkdir(at(p), 0o700))
		must(t, unix.Chmod(at(p), mode))
	}
	file := func(p, content string, mode uint32) {
		must(t, os.WriteFile(at(p), []byte(content), 0o600))
		must(t, unix.Chmod(at(p), mode))
	}
	mkdir("a", 0o755)
	mkdir("a/b", 0o700)
	file("a/b/deep.txt", "deep", 0o644)
	mkdir("a/empty", 0o755)
	file("a/file.txt", "hello", 0o644)
	must(t, os.Symlink("/etc/passwd", at("abs")))
	must(t, os.Symlink("nope/missing", at("dangling")))
	must(t, os.Symlink(outside, at("escape")))
	must(t, os.Symlink("../../"+filepath.Base(outside), at("escape-rel")))
	must(t, os.Symlink("a/file.txt", at("rel")))
	file("empty.txt", "", 0o644)
	must(t, unix.Mkfifo(at("fifo"), 0o600))
	must(t, os.Chmod(at("fifo"), 0o640))
	file("hard1", "pair", 0o644)
	must(t, os.Link(at("hard1"), at("hard2")))
	file("owned.txt", "mine", 0o640)
	must(t, os.Chown(at("owned.txt"), 1000, 1000))
	file("private.txt", "shh", 0o600)
	file("setuid", "#!", 0o4755)
	mkdir("sgid", 0o2755)
	mkdir("sticky", 0o1777)
	mkdir("sub", 0o755)
	// sub/t2 comes first in walk order, so it carries the triple's content.
	file("t1", "three", 0o644)
	must(t, os.Link(at("t1"), at("sub/t2")))
	must(t, os.Link(at("t1"), at("t3")))
	file("trusted.txt", "t", 0o644)
	// Only a non-user xattr (when CAP_SYS_ADMIN allows one): no Xattrs.
	_ = unix.Setxattr(at("trusted.txt"), "trusted.test", []byte("no"), 0)
	file("with space.txt", "sp", 0o644)
	file("ünïcødé ✓.txt", "u", 0o644)
	file("xattr.txt", "x", 0o644)
	var wantX map[string][]byte
	switch err := unix.Setxattr(at("xattr.txt"), "user.test", []byte("hello"), 0); {
	case err == nil:
		wantX = map[string][]byte{"user.test": []byte("hello")}
		must(t, unix.Setxattr(at("xattr.txt"), "user.empty", nil, 0))
		wantX["user.empty"] = []byte{}
		// Not in the user namespace: left out. Needs CAP_SYS_ADMIN.
		_ = unix.Setxattr(at("xattr.txt"), "trusted.test", []byte("no"), 0)
		must(t, unix.Setxattr(at("a/empty"), "user.dir", []byte("d"), 0))
	case errors.Is(err, unix.ENOTSUP):
		t.Log("no user xattrs on this filesystem: not checked")
	default:
		t.Fatal(err)
	}
	var dirX map[string][]byte
	if wantX != nil {
		dirX = map[string][]byte{"user.dir": []byte("d")}
	}
	// A socket is skipped.
	l, err := net.Listen("unix", at("sock"))
	must(t, err)
	defer l.Close()
	// A device node, if this container may make one.
	haveDev := unix.Mknod(at("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) == nil
	if haveDev {
		must(t, os.Chmod(at("null"), 0o666))
	}
	must(t, os.Chmod(dir, 0o755))

	wants := []want{
		{path: ".", typ: TypeDir, mode: 0o755},
		{path: "a", typ: TypeDir, mode: 0o755},
		{path: "a/b", typ: TypeDir, mode: 0o700},
		{path: "a/b/deep.txt", typ: TypeFile, mode: 0o644, size: 4},
		{path: "a/empty", typ: TypeDir, mode: 0o755, xattrs: dirX},
		{path: "a/file.txt", typ: TypeFile, mode: 0o644, size: 5},
		{path: "abs", typ: TypeSymlink, mode: 0o777, target: "/etc/passwd"},
		{path: "dangling", typ: TypeSymlink, mode: 0o777, target: "nope/missing"},
		{path: "empty.txt", typ: TypeFile, mode: 0o644},
		{path: "escape", typ: TypeSymlink, mode: 0o777, target: outside},
		{path: "escape-rel", typ: TypeSymlink, mode: 0o777, target: "../../" + filepath.Base(outside)},
		{path: "fifo", typ: TypeFIFO, mode: 0o640},
		{path: "hard1", typ: TypeFile, mode: 0o644, size: 4, nlink: 2},
		{path: "hard2", typ: TypeFile, mode: 0o644, size: 4, link: "hard1", nlink: 2},
	}
	if haveDev {
		wants = append(wants, want{path: "null", typ: TypeChar, mode: 0o666, rdev: unix.Mkdev(1, 3)})
	}
	wants = append(wants, []want{
		{path: "owned.txt", typ: TypeFile, mode: 0o640, uid: 1000, size: 4},
		{path: "private.txt", typ: TypeFile, mode: 0o600, size: 3},
		{path: "rel", typ: TypeSymlink, mode: 0o777, target: "a/file.txt"},
		{path: "setuid", typ: TypeFile, mode: 0o4755, size: 2},
		{path: "sgid", typ: TypeDir, mode: 0o2755},
		// "sock" is skipped.
		{path: "sticky", typ: TypeDir, mode: 0o1777},
		{path: "sub", typ: TypeDir, mode: 0o755},
		{path: "sub/t2", typ: TypeFile, mode: 0o644, size: 5, nlink: 3},
		{path: "t1", typ: TypeFile, mode: 0o644, size: 5, link: "sub/t2", nlink: 3},
		{path: "t3", typ: TypeFile, mode: 0o644, size: 5, link: "sub/t2", nlink: 3},
		{path: "trusted.txt", typ: TypeFile, mode: 0o644, size: 1},
		{path: "with space.txt", typ: TypeFile, mode: 0o644, size: 2},
		{path: "xattr.txt", typ: TypeFile, mode: 0o644, size: 1, xattrs: wantX},
		{path: "ünïcødé ✓.txt", typ: TypeFile, mode: 0o644, size: 1},
	}...)

	index := map[string]int{}
	for i, w := range wants {
		index[w.path] = i
	}
	var exp []Entry
	for i, w := range wants {
		var st unix.Stat_t
		must(t, unix.Lstat(at(w.path), &st))
		e := Entry{
			Index: i, Path: w.path, Type: w.typ, Mode: w.mode, UID: w.uid, GID: w.uid,
			Size: w.size, MtimeNs: st.Mtim.Nano(), Target: w.target, Rdev: w.rdev,
			LinkTo: NoLink, Nlink: max(w.nlink, 1), Xattrs: w.xattrs,
		}
		if w.link != "" {
			e.LinkTo = index[w.link]
		}
		exp = append(exp, e)
	}
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	modes := []struct {
		name   string
		choose func(int, *unix.Stat_t) probeMode
	}{
		{"auto", chooseProbe},
		{"open", func(int, *unix.Stat_t) probeMode { return probeNone }},
		{"proc", func(int, *unix.Stat_t) probeMode { return probeProc }},
		{"listxattrat", func(fd int, st *unix.Stat_t) probeMode {
			if chooseProbe(fd, st) != probeAt {
				t.Skip("no listxattrat on this kernel")
			}
			return probeAt
		}},
	}
	// Each directory stat'ed by one lister, and (parallelMin 2) by
	// several at once: the same manifest either way.
	defer func(n int) { parallelMin = n }(parallelMin)
	for _, par := range []int{parallelMin, 2} {
		for _, mode := range modes {
			t.Run(fmt.Sprintf("%s/parallelMin=%d", mode.name, par), func(t *testing.T) {
				parallelMin = par
				var skipped []string
				opts := WalkOptions{Skipped: func(p string) { skipped = append(skipped, p) }}
				m, err := walk(context.Background(), root, opts, mode.choose)
				must(t, err)
				if !reflect.DeepEqual(skipped, []string{"sock"}) {
					t.Errorf("skipped %q, want [sock]", skipped)
				}
				checkWalk(t, m, exp)
			})
		}
	}
	var st unix.Stat_t
	must(t, unix.Stat(dir, &st))
	t.Logf("probe chosen here: %d", chooseProbe(int(mustFd(t, root)), &st))
}

func mustFd(t *testing.T, root *os.Root) uintptr {
	f, err := root.Open(".")
	must(t, err)
	t.Cleanup(func() { f.Close() })
	return f.Fd()
}

func checkWalk(t *testing.T, m *Manifest, exp []Entry) {
	t.Helper()
	for i := range max(len(exp), len(m.Entries)) {
		switch {
		case i >= len(m.Entries):
			t.Errorf("missing entry %d %+v", i, exp[i])
		case i >= len(exp):
			t.Errorf("extra entry %+v", m.Entries[i])
		case !reflect.DeepEqual(m.Entries[i], exp[i]):
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, m.Entries[i], exp[i])
		}
	}
	if err := m.Validate(DefaultLimits); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if files, bytes := m.Totals(); files != 12 || bytes != 4+5+0+4+4+3+2+5+1+2+1+1 {
		t.Errorf("Totals = %d, %d", files, bytes)
	}

	// What Walk found survives the wire.
	roundTrip(t, m)
}

// roundTrip checks that m encodes and decodes to itself.
func roundTrip(t *testing.T, m *Manifest) {
	t.Helper()
	var buf bytes.Buffer
	must(t, Encode(&buf, m))
	got, err := Decode(&buf, DefaultLimits)
	must(t, err)
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got.Entries, m.Entries)
	}
}

// Names that are not UTF-8 are legal on Linux and must survive exactly.
func TestWalkNonUTF8(t *testing.T) {
	dir := t.TempDir()
	bad := "caf\xe9"
	must(t, os.Mkdir(filepath.Join(dir, bad), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, bad, "f\xff"), []byte("x"), 0o644))
	must(t, os.Symlink("to-\xfe", filepath.Join(dir, "l")))
	if err := unix.Setxattr(filepath.Join(dir, bad, "f\xff"), "user.\xff", []byte{0, 1, 2}, 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	m, err := Walk(context.Background(), root)
	must(t, err)
	var paths []string
	for _, e := range m.Entries {
		paths = append(paths, e.Path)
	}
	if want := []string{".", bad, bad + "/f\xff", "l"}; !reflect.DeepEqual(paths, want) {
		t.Fatalf("paths %q, want %q", paths, want)
	}
	if m.Entries[3].Target != "to-\xfe" {
		t.Errorf("target %q", m.Entries[3].Target)
	}
	must(t, m.Validate(DefaultLimits))
	roundTrip(t, m)
}

func TestWalkCanceled(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Walk(ctx, root); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// cancelAfter reports cancellation from its n-th Err call on.
type cancelAfter struct {
	context.Context
	n int
}

func (c *cancelAfter) Err() error {
	if c.n--; c.n <= 0 {
		return context.Canceled
	}
	return nil
}

// Cancellation is noticed inside one large directory, not only between
// directories.
func TestWalkCanceledLargeDir(t *testing.T) {
	dir := t.TempDir()
	for i := range 3000 {
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), nil, 0o644))
	}
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	m, err := Walk(context.Background(), root)
	must(t, err)
	if len(m.Entries) != 3001 {
		t.Fatalf("%d entries", len(m.Entries))
	}
	// The first Err call is at the root directory; the second is mid-list.
	if _, err := Walk(&cancelAfter{context.Background(), 2}, root); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// A directory replaced by a symlink after it was listed is not followed.
func TestWalkDirSwappedForSymlink(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "a"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "z"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "z", "f"), nil, 0o644))
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	// Simulate the race deterministically: list the root, then swap "a".
	w := &walker{ctx: context.Background(), root: root, m: &Manifest{}, choose: chooseProbe}
	f, err := root.Open(".")
	must(t, err)
	level, err := w.list(f, -1, ".", devIno{}, 0)
	f.Close()
	must(t, err)
	must(t, os.Remove(filepath.Join(dir, "a")))
	must(t, os.Symlink("z", filepath.Join(dir, "a")))
	w.m.Entries = append(w.m.Entries, level[0].e)
	err = w.dir(1, "a", level[0].id, 1)
	if err == nil || !strings.Contains(err.Error(), "changed during the walk") {
		t.Fatalf("err = %v, want a change to be detected", err)
	}
}

func TestWalkUnreadableDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any directory")
	}
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "locked"), 0))
	defer func() { must(t, os.Chmod(filepath.Join(dir, "locked"), 0o755)) }()
	root, err := os.OpenRoot(dir)
	must(t, err)
	defer root.Close()
	if _, err := Walk(context.Background(), root); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("err = %v, want EACCES", err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
