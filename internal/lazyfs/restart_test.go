package lazyfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/fusekeep"
	"github.com/cargo-migrate/cargo/internal/manifest"
)

// The take-over tests run servers in child processes (this test binary
// again), so one can be SIGKILLed while this process, the keeper, holds
// its connection.
const serveEnv = "LAZYFS_TEST_SERVE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(serveEnv); dir != "" {
		os.Exit(serveChild(dir))
	}
	os.Exit(m.Run())
}

// The tree the children serve: the same manifest in every one.
const (
	restartBig    = 64 << 20
	restartRemote = 500_000
	restartLocal  = 300_000
)

func restartManifest() (*manifest.Manifest, map[string]int) {
	b := newBuilder()
	idx := map[string]int{}
	idx["d"] = b.dir("d", 0o755)
	idx["d/big"] = b.file("d/big", 0o644, restartBig)
	idx["d/local"] = b.file("d/local", 0o644, restartLocal)
	idx["d/remote"] = b.file("d/remote", 0o644, restartRemote)
	return &b.m, idx
}

// childBackend serves d/local from a file in the shared directory and the
// rest generated; while blockBig is set, reads of d/big never return (the
// server is killed in them), after writing a marker.
type childBackend struct {
	dir      string
	idx      map[string]int
	blockBig bool
	once     sync.Once
}

func (b *childBackend) OpenLocal(i int) (*os.File, bool, error) {
	if i != b.idx["d/local"] {
		return nil, false, nil
	}
	f, err := os.Open(filepath.Join(b.dir, "local"))
	return f, err == nil, err
}

func (b *childBackend) ReadAt(ctx context.Context, i int, p []byte, off int64) (int, error) {
	if i == b.idx["d/big"] && b.blockBig {
		b.once.Do(func() {
			if err := os.WriteFile(filepath.Join(b.dir, "in-flight"), nil, 0o644); err != nil {
				panic(err)
			}
		})
		<-ctx.Done()
		return 0, ctx.Err()
	}
	genContent(p, off)
	return len(p), nil
}

// serveChild mounts (or takes over) the tree at dir with the keeper on fd
// 3, reports "ready-PID", and serves until SIGTERM, then unmounts.
func serveChild(dir string) int {
	shared := os.Getenv("LAZYFS_TEST_SHARED")
	fail := func(err error) int {
		// The test polls for this file; stderr reaches its log too.
		fmt.Fprintln(os.Stderr, "lazyfs test server:", err)
		if werr := os.WriteFile(filepath.Join(shared, "error"), []byte(err.Error()), 0o644); werr != nil {
			fmt.Fprintln(os.Stderr, werr)
		}
		return 1
	}
	k, err := fusekeep.NewClient(3)
	if err != nil {
		return fail(err)
	}
	m, idx := restartManifest()
	b := &childBackend{dir: shared, idx: idx, blockBig: os.Getenv("LAZYFS_TEST_BLOCK") != ""}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	fsys, err := Mount(dir, m, b, Options{Passthrough: true, Keeper: k})
	if err != nil {
		return fail(err)
	}
	ready := fmt.Sprintf("ready-%d-%v", os.Getpid(), fsys.Resumed())
	if err := os.WriteFile(filepath.Join(shared, ready), nil, 0o644); err != nil {
		return fail(err)
	}
	<-stop
	if err := fsys.Unmount(); err != nil {
		return fail(err)
	}
	return 0
}

type restartEnv struct {
	t      *testing.T
	store  *fusekeep.Store
	dir    string // the mount point
	shared string // the children's shared directory
}

// start runs a server child on a new connection to the store and waits
// until it serves; it reports whether it took the connection over.
func (e *restartEnv) start(block bool) (*exec.Cmd, bool) {
	e.t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	go e.store.Serve(pair[0])
	child := os.NewFile(uintptr(pair[1]), "keeper")
	defer child.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+e.dir, "LAZYFS_TEST_SHARED="+e.shared)
	if block {
		cmd.Env = append(cmd.Env, "LAZYFS_TEST_BLOCK=1")
	}
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cmd.Process.Kill() }) //nolint:errcheck // it may be gone
	prefix := fmt.Sprintf("ready-%d-", cmd.Process.Pid)
	var resumed bool
	e.poll("the server to start", func() bool {
		if b, err := os.ReadFile(filepath.Join(e.shared, "error")); err == nil {
			e.t.Fatalf("server: %s", b)
		}
		ents, _ := os.ReadDir(e.shared)
		for _, d := range ents {
			if rest, ok := bytes.CutPrefix([]byte(d.Name()), []byte(prefix)); ok {
				resumed = string(rest) == "true"
				return true
			}
		}
		return false
	})
	return cmd, resumed
}

func (e *restartEnv) poll(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("waiting for %s: timed out", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantGen(t *testing.T, what string, got []byte, off int64) {
	t.Helper()
	want := make([]byte, len(got))
	genContent(want, off)
	equalBytes(t, what, got, want)
}

// A server SIGKILLed while a read waits in it, with files open (read
// through the page cache and passed through) and an overlay on top: the
// next server takes the connection over, the read completes with the right
// bytes, the open files and the overlay keep working, and new opens of
// inodes open before the kill (which the kernel constrains) work too.
func TestTakeOverAfterKill(t *testing.T) {
	requireRoot(t)
	e := &restartEnv{t: t, store: fusekeep.NewStore(), dir: filepath.Join(testDir(t), "mnt"), shared: testDir(t)}
	t.Cleanup(e.store.Close)
	if err := os.Mkdir(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	local := randBytes(7, restartLocal)
	if err := os.WriteFile(filepath.Join(e.shared, "local"), local, 0o644); err != nil {
		t.Fatal(err)
	}
	first, resumed := e.start(true)
	if resumed {
		t.Fatal("the first server says it took a connection over")
	}
	t.Cleanup(func() { detach(t, e.dir) })
	merged, _ := mountOverlay(t, e.dir, overlayOptions)
	p := func(name string) string { return filepath.Join(e.dir, "d", name) }

	var before unix.Stat_t
	if err := unix.Stat(p("big"), &before); err != nil {
		t.Fatal(err)
	}
	remote, err := os.Open(p("remote"))
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	head := make([]byte, 4096)
	if _, err := remote.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	wantGen(t, "remote before", head, 0)
	pt, err := os.Open(p("local"))
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close()
	viaOverlay, err := os.Open(filepath.Join(merged, "d", "remote"))
	if err != nil {
		t.Fatal(err)
	}
	defer viaOverlay.Close()

	// A read of d/big through the overlay waits in the first server.
	const off = 32 << 20
	type result struct {
		b   []byte
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		f, err := os.Open(filepath.Join(merged, "d", "big"))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		b := make([]byte, 256<<10)
		n, err := f.ReadAt(b, off)
		done <- result{b: b[:n], err: err, at: time.Now()}
	}()
	e.poll("the read to reach the server", func() bool {
		_, err := os.Stat(filepath.Join(e.shared, "in-flight"))
		return err == nil
	})
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	first.Wait() //nolint:errcheck // killed
	select {
	case r := <-done:
		t.Fatalf("the read returned with its server dead and none started: %d bytes, %v", len(r.b), r.err)
	case <-time.After(100 * time.Millisecond):
	}

	second, resumed := e.start(false)
	if !resumed {
		t.Fatal("the second server did not take the connection over")
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("the read waiting at the kill: %v", r.err)
	}
	wantGen(t, "the read waiting at the kill", r.b, off)
	t.Logf("the waiting read completed %v after the kill", r.at.Sub(killed).Round(time.Millisecond))

	var after unix.Stat_t
	if err := unix.Stat(p("big"), &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != before.Ino || after.Dev != before.Dev {
		t.Errorf("d/big is %d:%d after, %d:%d before", after.Dev, after.Ino, before.Dev, before.Ino)
	}
	tail := make([]byte, 4096)
	if _, err := remote.ReadAt(tail, restartRemote-8192); err != nil {
		t.Fatalf("a file opened before the kill: %v", err)
	}
	wantGen(t, "a file opened before the kill", tail, restartRemote-8192)
	if _, err := viaOverlay.ReadAt(tail, restartRemote/2); err != nil {
		t.Fatalf("a file opened through the overlay before the kill: %v", err)
	}
	wantGen(t, "through the overlay", tail, restartRemote/2)
	got := make([]byte, restartLocal)
	if _, err := pt.ReadAt(got, 0); err != nil {
		t.Fatalf("a local file opened before the kill: %v", err)
	}
	equalBytes(t, "a local file opened before the kill", got, local)
	// New opens of the inode open before the kill must fit what the
	// kernel has (passthrough to the same backing file, if it was).
	for _, name := range []string{p("local"), filepath.Join(merged, "d", "local")} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("a new open of %s: %v", name, err)
		}
		equalBytes(t, "a new open of "+name, b, local)
	}
	ents, err := os.ReadDir(filepath.Join(merged, "d"))
	if err != nil || len(ents) != 3 {
		t.Errorf("listing through the overlay: %v, %v", ents, err)
	}

	// Closing everything and stopping the server lets the keeper go.
	remote.Close()
	pt.Close()
	viaOverlay.Close()
	if err := unix.Unmount(merged, 0); err != nil {
		t.Fatal(err)
	}
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		b, _ := os.ReadFile(filepath.Join(e.shared, "error"))
		t.Fatalf("second server: %v: %s", err, b)
	}
	e.poll("the keeper to let the connection go", func() bool { return e.store.Len() == 0 })
	if _, err := mountedDev(e.dir); err == nil {
		t.Error("still mounted after the server's Unmount")
	}
}

// A kept connection whose mount went away (unmounted while its server
// was dead) is dropped, and Mount makes a new one.
func TestTakeOverOfAGoneConnection(t *testing.T) {
	requireRoot(t)
	e := &restartEnv{t: t, store: fusekeep.NewStore(), dir: filepath.Join(testDir(t), "mnt"), shared: testDir(t)}
	t.Cleanup(e.store.Close)
	if err := os.Mkdir(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.shared, "local"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	first, _ := e.start(false)
	t.Cleanup(func() { detach(t, e.dir) })
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.Wait() //nolint:errcheck // killed
	if err := unix.Unmount(e.dir, 0); err != nil {
		t.Fatal(err)
	}
	second, resumed := e.start(false)
	if resumed {
		t.Fatal("took over a connection that is gone")
	}
	if _, err := os.Stat(filepath.Join(e.dir, "d", "big")); err != nil {
		t.Fatalf("the new mount: %v", err)
	}
	if n := e.store.Len(); n != 1 {
		t.Errorf("the keeper holds %d connections, want the new one", n)
	}
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second server: %v", err)
	}
}

// The table of open files: records survive into a new mapping of the same
// memory, counts follow opens and releases, and a resent OPEN finds the
// record its first try made.
func TestOpenTable(t *testing.T) {
	f, err := newTableFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := openOpenTable(f)
	if err != nil {
		t.Fatal(err)
	}
	fh1, _ := a.add(5, 100, openPassthrough, 9)
	fh2, _ := a.add(5, 102, openPassthrough, 9)
	fh3, _ := a.add(7, 104, openCached, 0)
	fh4, _ := a.add(8, 106, openCached, 0)
	a.remove(fh4)
	if fh1 == fh2 || fh2 == fh3 {
		t.Fatalf("file handles repeat: %d %d %d", fh1, fh2, fh3)
	}
	if got := a.inode(5); got != (inodeOpens{passthrough: 2, backing: 9}) {
		t.Errorf("inode 5: %+v", got)
	}
	// Another process maps the same memory.
	b, err := openOpenTable(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.inode(5); got != (inodeOpens{passthrough: 2, backing: 9}) {
		t.Errorf("inode 5 in the next process: %+v", got)
	}
	if got := b.inode(7); got != (inodeOpens{cached: 1}) {
		t.Errorf("inode 7 in the next process: %+v", got)
	}
	if got := b.inode(8); got != (inodeOpens{}) {
		t.Errorf("inode 8, released, in the next process: %+v", got)
	}
	if rec, ok := b.byOpen(102); !ok || rec.fh != fh2 || rec.node != 5 {
		t.Errorf("the record of OPEN 102: %+v, %v", rec, ok)
	}
	b.remove(fh1)
	b.remove(fh2)
	if got := b.inode(5); got != (inodeOpens{}) {
		t.Errorf("inode 5 after its releases: %+v", got)
	}
	fh5, _ := b.add(6, 108, openCached, 0)
	if fh5 == fh3 {
		t.Errorf("the next process reused file handle %d", fh3)
	}
	if err := errors.Join(a.close(), b.close()); err != nil {
		t.Fatal(err)
	}
	c, err := openOpenTable(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if n := len(c.byFH); n != 2 {
		t.Errorf("%d records after two processes, want 2 (fh %d and %d)", n, fh3, fh5)
	}
}
