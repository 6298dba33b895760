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
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/failpoint"
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
// overlayFixture is a replica directory with an overlay mounted over it,
// as the driver mounts a federated volume.
type overlayFixture struct {
	data, upper, work, merged string
	mounted                   bool
}

// mountOverlay lays out data with script, mounts the overlay and runs
// container in the merged view.
func mountOverlay(t *testing.T, script, container string) *overlayFixture {
	t.Helper()
	base := t.TempDir()
	o := &overlayFixture{data: filepath.Join(base, "data"), upper: filepath.Join(base, "upper"), work: filepath.Join(base, "work"), merged: filepath.Join(base, "merged")}
	for _, d := range []string{o.data, o.upper, o.work, o.merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, o.data, script)
	opts := "lowerdir=" + o.data + ",upperdir=" + o.upper + ",workdir=" + o.work + ",index=off,redirect_dir=off,metacopy=off"
	if err := unix.Mount("overlay", o.merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mounting overlay: %v", err)
	}
	o.mounted = true
	t.Cleanup(func() {
		if o.mounted {
			if err := unix.Unmount(o.merged, unix.MNT_DETACH); err != nil {
				t.Errorf("unmounting overlay: %v", err)
			}
		}
	})
	sh(t, o.merged, container)
	return o
}

func (o *overlayFixture) unmount(t *testing.T) {
	t.Helper()
	if err := unix.Unmount(o.merged, 0); err != nil {
		t.Fatal(err)
	}
	o.mounted = false
}

func sh(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

func TestSettleKeepsWhatTheContainerSaw(t *testing.T) {
	o := mountOverlay(t, `mkdir -p keep gone replaced/sub typechange; echo k > keep/f; echo g > gone/f
		echo old > replaced/sub/old; echo x > typechange/x; echo a > renamed-from; echo m > modified
		echo d > deleted; ln -s keep/f link`, `echo new > new; echo more >> modified; rm deleted; mv renamed-from renamed-to
		rm -r gone; rm -r replaced; mkdir -p replaced; echo fresh > replaced/only
		rm -r typechange; echo now-a-file > typechange; rm link; ln -s modified link
		mkdir -p newdir/deep; echo deep > newdir/deep/f; chmod 0700 .; chown 1000 keep/f`)
	data, upper, work, merged := o.data, o.upper, o.work, o.merged
	want := snapshot(t, merged)
	o.unmount(t)

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

func mtimeOf(t *testing.T, p string) time.Time {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// A settle interrupted part-way and run again gives the root and a merged
// directory the times the container saw. On the old code the second run
// read them from the upper directories, which the first run's renames had
// changed: both got the time of the first run instead.
func TestSettleRedoneKeepsDirTimes(t *testing.T) {
	needFailpoints(t)
	// Calls of replica.settle.before-entry, in ReadDir order: d, d/b, d/c,
	// new1, new2.
	for name, stop := range map[string]struct {
		point string
		call  int
	}{
		"inside a merged directory": {"replica.settle.before-entry", 3},
		"at the root":               {"replica.settle.before-entry", 5},
		"before removing work":      {"replica.settle.before-work-remove", 1},
	} {
		t.Run(name, func(t *testing.T) {
			o := mountOverlay(t, `mkdir d; echo a > d/a; echo k > keep`,
				`echo n > new1; echo n > new2; echo b > d/b; echo c > d/c; touch -d @1000000000 d; touch -d @1100000000 .`)
			want := snapshot(t, o.merged)
			wantRoot, wantD := mtimeOf(t, o.merged), mtimeOf(t, filepath.Join(o.merged, "d"))
			o.unmount(t)

			calls := 0
			reset := failpoint.SetFunc(stop.point, func() error {
				if calls++; calls == stop.call {
					return errors.New("killed")
				}
				return nil
			})
			err := Settle(o.data, o.upper, o.work)
			reset()
			if err == nil {
				t.Fatal("the failpoint did not stop the settle")
			}
			time.Sleep(10 * time.Millisecond) // so that a time taken now differs
			if err := Settle(o.data, o.upper, o.work); err != nil {
				t.Fatal(err)
			}
			if got := snapshot(t, o.data); got != want {
				t.Fatalf("after a redone settle:\n%s\n\nthe container saw:\n%s", got, want)
			}
			if got := mtimeOf(t, o.data); !got.Equal(wantRoot) {
				t.Errorf("root mtime %v, the container saw %v", got, wantRoot)
			}
			if got := mtimeOf(t, filepath.Join(o.data, "d")); !got.Equal(wantD) {
				t.Errorf("d mtime %v, the container saw %v", got, wantD)
			}
		})
	}
}

// Temporary files a crash left in the replica are not carried into the
// settled volume; files a container made with such names are kept, also
// when the settle is redone after it merged them. On the old code the
// replica's leftovers were kept as volume files.
func TestSettleDropsTempFiles(t *testing.T) {
	needFailpoints(t)
	o := mountOverlay(t, `mkdir dir; echo s > dir/small`,
		`echo mine > .cargo-tmp-9-b; mkdir mine; echo mine > mine/.cargo-tmp-1-b; echo x > zz`)
	want := snapshot(t, o.merged)
	o.unmount(t)
	// The replica's leftovers, which the container's view never showed.
	for _, p := range []string{"dir/.cargo-tmp-2-b", ".cargo-tmp-7-d", ".cargo-tmp-9-d"} {
		if err := os.WriteFile(filepath.Join(o.data, p), []byte("tmp"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Stop after the container's .cargo-tmp-9-b is merged (entries:
	// .cargo-tmp-9-b, mine, zz).
	calls := 0
	reset := failpoint.SetFunc("replica.settle.before-entry", func() error {
		if calls++; calls == 2 {
			return errors.New("killed")
		}
		return nil
	})
	if err := Settle(o.data, o.upper, o.work); err == nil {
		t.Fatal("the failpoint did not stop the settle")
	}
	reset()
	if err := Settle(o.data, o.upper, o.work); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, o.data); got != want {
		t.Fatalf("after settling:\n%s\n\nthe container saw:\n%s", got, want)
	}
}
