package replica

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// snapshot lists a tree as "path mode uid size content" lines.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := fi.Sys().(*syscall.Stat_t)
		line := rel + " " + fi.Mode().String() + " " + itoa(st.Uid)
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }

// What a container did through the overlay is what the replica holds
// after settling: writes, copy-ups, deletions, renames, a directory
// replaced, a type change, the root's mode.
func TestSettleKeepsWhatTheContainerSaw(t *testing.T) {
	base := t.TempDir()
	data, upper, work, merged := filepath.Join(base, "data"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{data, upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sh := func(dir, script string) {
		t.Helper()
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
	}
	sh(data, `mkdir -p keep gone replaced/sub typechange; echo k > keep/f; echo g > gone/f
		echo old > replaced/sub/old; echo x > typechange/x; echo a > renamed-from; echo m > modified
		echo d > deleted; ln -s keep/f link`)
	opts := "lowerdir=" + data + ",upperdir=" + upper + ",workdir=" + work + ",index=off,redirect_dir=off,metacopy=off"
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mounting overlay: %v", err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
				t.Errorf("unmounting overlay: %v", err)
			}
		}
	})
	sh(merged, `echo new > new; echo more >> modified; rm deleted; mv renamed-from renamed-to
		rm -r gone; rm -r replaced; mkdir -p replaced; echo fresh > replaced/only
		rm -r typechange; echo now-a-file > typechange; rm link; ln -s modified link
		mkdir -p newdir/deep; echo deep > newdir/deep/f; chmod 0700 .; chown 1000 keep/f`)
	want := snapshot(t, merged)
	if err := unix.Unmount(merged, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false

	if err := Settle(data, upper, work); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, data); got != want {
		t.Fatalf("after settle:\n%s\n\nthe container saw:\n%s", got, want)
	}
	if left, _ := os.ReadDir(upper); len(left) != 0 {
		t.Fatalf("upper not empty: %v", left)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Fatalf("work left: %v", err)
	}
	// No overlay marker survives into the plain volume.
	err := filepath.Walk(data, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		buf := make([]byte, 64<<10)
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("listing xattrs of %s: %w", p, err)
		}
		if strings.Contains(string(buf[:n]), "trusted.overlay") {
			t.Errorf("%s keeps %q", p, buf[:n])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Running it again changes nothing.
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Settle(data, upper, work); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, data); got != want {
		t.Fatal("a second settle changed the replica")
	}
}
