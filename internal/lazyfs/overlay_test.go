package lazyfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// overlayOptions is what the volume mount uses: no index (the lower layer
// is not a local filesystem with file handles), no redirects or metacopy
// (a copy-up is always a full copy, so upper alone is a complete tree once
// the lower goes away), no xino (inode numbers come from the layers).
const overlayOptions = "index=off,redirect_dir=off,metacopy=off,xino=off"

// mountOverlay mounts an overlay with lower as its only lower layer and
// returns the merged and upper directories; it is unmounted at cleanup,
// before the lower is (cleanups run last-in first-out).
func mountOverlay(t testing.TB, lower, extra string) (merged, upper string) {
	t.Helper()
	base := testDir(t)
	merged, upper, work := filepath.Join(base, "merged"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{merged, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if extra != "" {
		data += "," + extra
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		t.Fatalf("mount overlay %q: %v", data, err)
	}
	t.Cleanup(func() {
		// EINVAL: the test unmounted it already.
		if err := unix.Unmount(merged, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount overlay: %v", err)
			detach(t, merged)
		}
	})
	return merged, upper
}

func TestOverlayOptions(t *testing.T) {
	fx := newFixture(t)
	_, mnt := mountTest(t, fx.m, fx.b, Options{})
	base := testDir(t)
	for _, opt := range append(strings.Split(overlayOptions, ","), overlayOptions, "redirect_dir=nofollow", "uuid=off", "nfs_export=off") {
		merged, upper, work := filepath.Join(base, "m"), filepath.Join(base, "u"), filepath.Join(base, "w")
		for _, d := range []string{merged, upper, work} {
			os.RemoveAll(d)
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+mnt+",upperdir="+upper+",workdir="+work+","+opt)
		if err == nil {
			if err := unix.Unmount(merged, 0); err != nil {
				t.Errorf("unmount: %v", err)
				detach(t, merged)
			}
		}
		t.Logf("overlay option %-50s accepted=%v %v", opt, err == nil, errOrEmpty(err))
		if opt == overlayOptions && err != nil {
			t.Errorf("the options the volume mount uses were refused: %v", err)
		}
	}
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestOverlay(t *testing.T) {
	for _, pt := range []bool{false, true} {
		name := "fuse"
		if pt {
			name = "passthrough"
		}
		t.Run(name, func(t *testing.T) { testOverlay(t, pt) })
	}
}

func testOverlay(t *testing.T, passthrough bool) {
	fx := newFixture(t)
	fsys, mnt := mountTest(t, fx.m, fx.b, Options{Passthrough: passthrough})
	merged, upper := mountOverlay(t, mnt, overlayOptions)
	m := func(p string) string { return filepath.Join(merged, p) }
	u := func(p string) string { return filepath.Join(upper, p) }
	readEq := func(path string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		equalBytes(t, path, got, want)
	}
	isWhiteout := func(p string) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(u(p), &st); err != nil {
			t.Errorf("%s: no whiteout in upper: %v", p, err)
			return
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s in upper: mode %o rdev %d, want a 0/0 character device", p, st.Mode, st.Rdev)
		}
		if _, err := os.Lstat(m(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still visible in merged: %v", p, err)
		}
	}

	t.Run("read", func(t *testing.T) {
		for _, p := range []string{"dir/remote.txt", "dir/local.bin", "hl/b", "dir/z", "ünïcødé dir/файл 日本"} {
			readEq(m(p), fx.content[p])
		}
		ents, err := os.ReadDir(merged)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		var want []string
		for _, e := range fx.m.Entries[1:] {
			if !strings.Contains(e.Path, "/") {
				want = append(want, e.Path)
			}
		}
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Errorf("merged root:\n got %q\nwant %q", names, want)
		}
		buf := make([]byte, 64)
		if n, err := unix.Getxattr(m("xattr.txt"), "user.comment", buf); err != nil || string(buf[:n]) != "hi" {
			t.Errorf("user.comment through overlay: %q %v", buf[:n], err)
		}
		if _, err := os.Stat(m("opaque/child")); err != nil {
			t.Errorf("opaque/child: %v", err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(m("fifo"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			t.Errorf("fifo through overlay: %o %v", st.Mode, err)
		}
	})

	t.Run("new file", func(t *testing.T) {
		if err := os.WriteFile(m("new.txt"), []byte("new\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		readEq(u("new.txt"), []byte("new\n"))
		if _, err := os.Lstat(filepath.Join(mnt, "new.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("new file visible in lower: %v", err)
		}
	})

	t.Run("modify lower file", func(t *testing.T) {
		p := "dir/remote.txt"
		f, err := os.OpenFile(m(p), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("MOD"); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		want := append(slices.Clone(fx.content[p]), "MOD"...)
		readEq(u(p), want)
		readEq(m(p), want)
		readEq(filepath.Join(mnt, p), fx.content[p])
	})

	t.Run("chmod copies up", func(t *testing.T) {
		p := "secret"
		if err := os.Chmod(m(p), 0o640); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(u(p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode != unix.S_IFREG|0o640 || st.Uid != 1000 || st.Gid != 1000 {
			t.Errorf("copied-up secret: mode %o owner %d:%d", st.Mode, st.Uid, st.Gid)
		}
		if st.Mtim.Nano() != fx.entry(p).MtimeNs {
			t.Errorf("copy-up mtime %d, want %d", st.Mtim.Nano(), fx.entry(p).MtimeNs)
		}
		readEq(u(p), fx.content[p])
	})

	t.Run("fifo copy-up", func(t *testing.T) {
		if err := os.Chmod(m("fifo"), 0o600); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(u("fifo"), &st); err != nil || st.Mode != unix.S_IFIFO|0o600 || st.Uid != 1000 {
			t.Errorf("copied-up fifo: mode %o uid %d %v", st.Mode, st.Uid, err)
		}
	})

	t.Run("delete lower file", func(t *testing.T) {
		if err := os.Remove(m("empty")); err != nil {
			t.Fatal(err)
		}
		isWhiteout("empty")
		if _, err := os.Lstat(filepath.Join(mnt, "empty")); err != nil {
			t.Errorf("lower lost the file: %v", err)
		}
	})

	t.Run("rename lower file", func(t *testing.T) {
		if err := os.Rename(m("dir/local.bin"), m("dir/renamed.bin")); err != nil {
			t.Fatal(err)
		}
		readEq(u("dir/renamed.bin"), fx.content["dir/local.bin"])
		readEq(m("dir/renamed.bin"), fx.content["dir/local.bin"])
		isWhiteout("dir/local.bin")
	})

	t.Run("rename lower dir", func(t *testing.T) {
		// With redirect_dir=off the kernel refuses, and mv falls back to
		// copying; EXDEV is the expected answer.
		err := os.Rename(m("hl"), m("hl2"))
		t.Logf("rename of a lower directory: %v", err)
		if !errors.Is(err, syscall.EXDEV) {
			t.Errorf("rename lower dir: %v, want EXDEV", err)
		}
	})

	t.Run("mkdir rmdir", func(t *testing.T) {
		if err := os.Mkdir(m("newdir"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(u("newdir")); err != nil {
			t.Errorf("new dir not in upper: %v", err)
		}
		if err := os.Remove(m("newdir")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(u("newdir")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("removed new dir left %v in upper", err)
		}
		if err := os.Remove(m("emptydir")); err != nil {
			t.Fatal(err)
		}
		isWhiteout("emptydir")
	})

	t.Run("hard link copy-up", func(t *testing.T) {
		// index=off: copying up one path of a hard-link group breaks the
		// link; the other paths keep showing the lower content.
		if err := os.WriteFile(m("hl/a"), []byte("changed"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(m("hl/b"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("after writing hl/a through the overlay, hl/b is %s", map[bool]string{true: "unchanged (link broken by copy-up)", false: "changed"}[string(got) == string(fx.content["hl/b"])])
	})

	t.Run("setuid", func(t *testing.T) {
		if _, ok := fx.idx["suid-id"]; !ok {
			t.Skip("no /usr/bin/id")
		}
		// Through the overlay, setuid works: exec checks the overlay's
		// mount flags, not the lower's nosuid. Directly on the FUSE
		// mount it does not (nosuid). Run through sh so the exec of a
		// file on our own mount does not happen in our fork.
		out, errOut, err := runAs(t, 1000, 1000, nil, "/bin/sh", "-c", `"$1"`, "sh", m("suid-id"))
		if err != nil {
			t.Fatalf("%v: %s", err, errOut)
		}
		if !strings.Contains(out, "euid=0") {
			t.Errorf("setuid id through overlay: %q, want euid=0", out)
		}
		out, errOut, err = runAs(t, 1000, 1000, nil, "/bin/sh", "-c", `"$1"`, "sh", filepath.Join(mnt, "suid-id"))
		if err != nil {
			t.Fatalf("%v: %s", err, errOut)
		}
		if strings.Contains(out, "euid=0") {
			t.Errorf("setuid id directly on the FUSE mount: %q; nosuid should prevent euid=0", out)
		}
		out, errOut, err = runAs(t, 2000, 2000, nil, "/bin/sh", "-c", `"$1"`, "sh", m("exec.sh"))
		if err != nil || out != "hi\n" {
			t.Errorf("exec.sh as 2000: %q %v %s", out, err, errOut)
		}
	})

	t.Run("permissions", func(t *testing.T) {
		out, errOut, err := runAs(t, 2000, 2000, nil, "/bin/cat", m("group"))
		if err == nil || !strings.Contains(errOut, "Permission denied") {
			t.Errorf("cat group as 2000 through overlay: %q %v %q", out, err, errOut)
		}
		out, _, err = runAs(t, 2000, 2000, []uint32{1000}, "/bin/cat", m("group"))
		if err != nil || out != "group data\n" {
			t.Errorf("cat group as 2000 in group 1000 through overlay: %q %v", out, err)
		}
	})

	t.Logf("server reads: %+v", fsys.Stats())
}

// TestUnmountWaitsForOverlay pins down an ordering rule: an overlay keeps
// its lower filesystem alive, so unmounting the FUSE mount point while the
// overlay is mounted succeeds at once but the server must keep serving;
// Unmount returns only once the overlay is gone.
func TestUnmountWaitsForOverlay(t *testing.T) {
	fx := newFixture(t)
	fsys, mnt := mountTest(t, fx.m, fx.b, Options{})
	merged, _ := mountOverlay(t, mnt, overlayOptions)
	done := make(chan error, 1)
	go func() { done <- fsys.Unmount() }()
	select {
	case err := <-done:
		t.Fatalf("Unmount returned %v while the overlay still uses the tree", err)
	case <-time.After(500 * time.Millisecond):
	}
	// Still served through the overlay.
	got, err := os.ReadFile(filepath.Join(merged, "dir/remote.txt"))
	if err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "read after FUSE unmount", got, fx.content["dir/remote.txt"])
	if err := unix.Unmount(merged, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Unmount: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Unmount still blocked after the overlay was unmounted")
	}
}
