package federation_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// inNamespace runs fn on a thread of its own inside the namespace that
// path (a /proc/PID/ns/* or /var/run/netns/* file) names, of type nstype
// (unix.CLONE_NEWNS, unix.CLONE_NEWNET). What fn creates there stays there:
// a mount in a mount namespace, a socket in a network namespace (and it
// serves from any thread afterwards). The thread is never given back to
// the scheduler, so nothing else runs in the namespace: it ends with fn.
func inNamespace(path string, nstype int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		errc <- func() error {
			if nstype == unix.CLONE_NEWNS {
				// A thread sharing its filesystem attributes with others
				// cannot change its mount namespace.
				if err := unix.Unshare(unix.CLONE_FS); err != nil {
					return fmt.Errorf("unshare(CLONE_FS): %w", err)
				}
			}
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("opening namespace %s: %w", path, err)
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, nstype); err != nil {
				return fmt.Errorf("entering namespace %s: %w", path, err)
			}
			return fn()
		}()
	}()
	return <-errc
}

// smallDisk is a small file system holding one volume's directory in a
// host's plugin: the replica, the overlay's upper and work directories and
// the copy's working files all fill it.
//
// The plugin's state mount is private to the plugin's own mount namespace
// (the engine's namespace, where tests/hosts.sh mounts, does not propagate
// into it), so the file system is mounted in there; this process reaches
// it through /proc/PID/root.
type smallDisk struct {
	pid    int
	inside string // the volume's directory as the plugin sees it
	path   string // the same, from this process
	done   bool
}

// mountSmallDisk mounts a tmpfs of size bytes on the directory of volume
// vol in h's plugin, which must not exist yet. It stays mounted until
// unmount, or the test's end.
func mountSmallDisk(t *testing.T, h *harness.Host, vol string, size int64) *smallDisk {
	t.Helper()
	pid := pluginPID(t, h)
	d := &smallDisk{pid: pid, inside: "/mnt/state/volumes/" + vol}
	d.path = fmt.Sprintf("/proc/%d/root%s", pid, d.inside)
	// The state directory is the same directory here and in the plugin.
	if err := os.MkdirAll(filepath.Join(stateDir(h), "volumes", vol), 0o700); err != nil {
		t.Fatal(err)
	}
	err := inNamespace(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.CLONE_NEWNS, func() error {
		return unix.Mount("tmpfs", d.inside, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size))
	})
	if err != nil {
		t.Fatalf("mounting a small disk on %s in the plugin of %s: %v", vol, h.Name, err)
	}
	t.Cleanup(func() { d.unmount(t) })
	return d
}

// unmount detaches the file system; the plugin's files open on it keep it
// until they are closed.
func (d *smallDisk) unmount(t *testing.T) {
	if d.done {
		return
	}
	d.done = true
	err := inNamespace(fmt.Sprintf("/proc/%d/ns/mnt", d.pid), unix.CLONE_NEWNS, func() error {
		return unix.Unmount(d.inside, unix.MNT_DETACH)
	})
	if err != nil {
		t.Logf("unmounting the small disk %s: %v", d.inside, err)
	}
}

func (d *smallDisk) free(t *testing.T) int64 {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(d.path, &fs); err != nil {
		t.Fatal(err)
	}
	return int64(fs.Bavail) * int64(fs.Bsize)
}

// fill takes all but leave bytes of the disk's free space with a file,
// and returns its path.
func (d *smallDisk) fill(t *testing.T, leave int64) string {
	t.Helper()
	n := d.free(t) - leave
	if n <= 0 {
		t.Fatalf("the small disk has %d bytes free, want more than %d", d.free(t), leave)
	}
	p := filepath.Join(d.path, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		t.Fatalf("filling the small disk: %v", err)
	}
	return p
}

// needRE is the space a copy stalled on a full disk asks for
// (copier.fullDiskError), in go-units' binary sizes.
var needRE = regexp.MustCompile(`the disk holding the volume is full: ([0-9.]+)([KMGT]i)?B more needed for the copy; free space on this host and the copy resumes by itself`)

func needBytes(msg string) (int64, bool) {
	m := needRE.FindStringSubmatch(msg)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	shift := map[string]uint{"": 0, "Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40}[m[2]]
	return int64(v * float64(int64(1)<<shift)), true
}

// The target's disk fills in the middle of a copy. The copy stalls saying
// how much more space it needs, keeps what it copied, and a container's
// write that does not fit fails with ENOSPC and leaves the file it wrote
// to whole. Once space is freed the copy resumes by itself and completes.
//
// The disk is filled after the volume is created: the plugin refuses at
// creation a copy that cannot fit at all.
func TestTargetDiskFull(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	env.PluginLogOnFailure(t)
	vol, want := source(t, src, 32)
	large := listedEntry(t, want, "./large.bin")
	throttle(t, src, "40mbit") // ~7 s for the large file

	disk := mountSmallDisk(t, dst, vol, 48<<20)
	_, ticket := export(t, src, dst, vol)
	dst.MustDocker(t, "volume", "create", "-d", "cargo", "-o", "from="+ticket, vol)
	// The volume goes before its disk: containers first (their cleanups
	// run before this one), then the disk, then the volume.
	t.Cleanup(func() {
		disk.unmount(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dst.Docker(ctx, "volume", "rm", "-f", vol)
	})
	app := dst.Unique(t, "app")
	dst.MustDocker(t, "run", "-d", "--name", app, "-v", vol+":/data", env.Image, "sleep", "3600")

	// Some of the copy is local before the disk fills: it must stay.
	midCopy(t, dst, vol)
	filler := disk.fill(t, 4<<20)
	total := int64(dst.VolumeStatus(t, vol)["bytes_total"].(float64))
	var st map[string]any
	harness.Eventually(t, time.Minute, "the copy stalls on the full disk", func() error {
		st = dst.VolumeStatus(t, vol)
		if st["state"] == "complete" {
			t.Fatalf("the copy completed before the disk filled: the throttle is too loose (%v)", st)
		}
		if st["state"] != "stalled" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	msg := fmt.Sprint(st["error"])
	need, ok := needBytes(msg)
	if !ok {
		t.Fatalf("the stalled copy's error does not say the space it needs: %q", msg)
	}
	stalledAt := copied(st)
	if stalledAt == 0 || need <= 0 || need > total-stalledAt {
		t.Fatalf("stalled with %d of %d bytes copied, asking for %d more bytes: %v", stalledAt, total, need, st)
	}
	t.Logf("stalled at %d of %d bytes: %s", stalledAt, total, msg)

	// Appending to the large file copies it up into the overlay's upper
	// layer, which has no room: the write fails, and the file stays as the
	// source has it.
	r := dst.Docker(harness.Ctx(t), "exec", app, "sh", "-c", "echo more >> /data/large.bin")
	if r.Err == nil || !strings.Contains(r.Combined(), "No space left on device") {
		t.Fatalf("a write that does not fit: %v %q", r.Err, r.Combined())
	}
	if got := dst.MustDocker(t, "exec", app, "sh", "-c", "stat -c %s /data/large.bin; md5sum < /data/large.bin | cut -d' ' -f1"); got != fmt.Sprintf("%d\n%s", 32<<20, large[len(large)-1]) {
		t.Fatalf("large.bin after the failed write: %q, want the source's %v", got, large)
	}
	if st := dst.VolumeStatus(t, vol); st["state"] != "stalled" || copied(st) < stalledAt {
		t.Fatalf("status while the disk is full: %v (had %d bytes)", st, stalledAt)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 2*time.Minute, "the copy resumes and completes", func() error {
		st := dst.VolumeStatus(t, vol)
		if copied(st) < stalledAt {
			t.Fatalf("bytes_copied fell from %d to %d: %v", stalledAt, copied(st), st)
		}
		if st["state"] != "complete" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	dst.MustDocker(t, "rm", "-f", app)
	sameListing(t, "the volume copied across a full disk", listing(t, dst, vol), want)
}

// listedEntry returns the fields of path's line in a listing (listScript).
func listedEntry(t *testing.T, listing, path string) []string {
	t.Helper()
	for _, l := range strings.Split(listing, "\n") {
		if f := strings.Split(l, "|"); f[0] == path {
			return f
		}
	}
	t.Fatalf("%s is not in the listing:\n%s", path, listing)
	return nil
}
