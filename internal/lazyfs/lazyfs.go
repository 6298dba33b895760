// Package lazyfs serves a volume's frozen source tree, described by its
// manifest, as a read-only FUSE filesystem. On the target host it is the
// lower layer of the overlay that a migrated volume mounts: the overlay's
// upper directory takes the container's writes, and this filesystem answers
// reads of what has not been written, from the local replica when a file
// has been copied already and from the source host on demand otherwise.
//
// Everything the kernel is told (inode numbers, attributes, directory
// listings, file contents) is fixed for the life of the mount, so the
// kernel is allowed to cache all of it for long.
//
// A mount can outlive the process serving it: with Options.Keeper, the
// FUSE connection is handed to a keeper (the plugin's holder process), and
// the next process to Mount the same directory with the same manifest
// takes the connection over instead of mounting again. What the kernel
// already knows (node IDs, open files) stays valid because node IDs are
// computed from the manifest and open files are recorded with the
// connection; the requests the dead process had taken are asked for again
// (FUSE_NOTIFY_RESEND, Linux 6.9). Readers see a pause.
package lazyfs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// Backend is what the filesystem needs from the copier. Indices are
// manifest entry indices; for a hard-link group the filesystem always asks
// for the group's first entry, which carries the content.
type Backend interface {
	// OpenLocal returns a local, complete, read-only copy of entry
	// index's content if there is one (ok=true); the filesystem owns and
	// closes f. Otherwise ok=false. A file that has become local must stay
	// local. It is called on every open and, while a handle is still
	// reading remotely, before each of its reads, so the ok=false answer
	// must be cheap.
	OpenLocal(index int) (f *os.File, ok bool, err error)
	// ReadAt serves a read of a file that is not (yet) local: it fetches
	// what is needed (the requested range first) and returns the bytes
	// read, like io.ReaderAt. It may block while fetching; ctx is the FUSE
	// request's context, cancelled when the reader is interrupted by a
	// signal. Go readers are interrupted often (the runtime's preemption
	// signal), and retry, so a cancelled ReadAt should stop waiting but
	// let the fetch carry on for the retry to find.
	ReadAt(ctx context.Context, index int, p []byte, off int64) (int, error)
}

// Keeper keeps descriptors open for the next process, under a name
// (fusekeep.Client is one).
type Keeper interface {
	// Keep hands the files (dups of them) to the keeper with state,
	// replacing what it kept under name. It has them once Keep returns.
	Keep(name string, state []byte, files ...*os.File) error
	// Holds reports whether the previous process left something under
	// name that nobody took yet.
	Holds(name string) bool
	// Take returns, once, what the previous process left under name;
	// the files are the caller's.
	Take(name string) (state []byte, files []*os.File, ok bool)
	// Drop makes the keeper close what it keeps under name.
	Drop(name string) error
}

// Options tune a mount.
type Options struct {
	// Debug logs every FUSE request and reply.
	Debug bool
	// Passthrough asks the kernel to serve reads of local files without
	// going through this process (kernel >= 6.9, CAP_SYS_ADMIN). If the
	// kernel refuses, reads go through this process as without it.
	Passthrough bool
	// ReadAheadKB, if positive, sets the mount's readahead window
	// (/sys/class/bdi/<dev>/read_ahead_kb, 128 by default). The kernel
	// sizes READ requests by it, up to 1 MiB here, so 1024 makes a
	// sequential read of a remote file cost an eighth of the round trips.
	// Mount fails if it cannot be set (e.g. /sys is read-only).
	ReadAheadKB int
	// Keeper, if set, keeps the mount's FUSE connection for the next
	// process, and Mount takes over one it kept for the same directory.
	// A connection taken over keeps the Passthrough choice it was made
	// with.
	Keeper Keeper
}

// Stats counts FUSE reads this process served; reads the kernel answers
// from its page cache or through passthrough never show up here.
type Stats struct {
	LocalReads  uint64 // READ requests served from a local file
	RemoteReads uint64 // READ requests served by Backend.ReadAt
}

// FS is a mounted tree.
type FS struct {
	dir     string
	tree    *tree
	backend Backend
	opts    Options
	server  *fuse.Server
	logger  *log.Logger
	resumed bool

	// opens records the open files, handles what this process keeps
	// of those read through it (by file handle), openMu serializes
	// opens and releases of an inode (striped).
	opens   *openTable
	handles sync.Map
	openMu  [openLocks]sync.Mutex

	// passthrough is whether new opens may be passed through: asked
	// for, offered by the kernel, and not refused yet.
	passthrough atomic.Bool

	localReads  atomic.Uint64
	remoteReads atomic.Uint64

	unmountMu sync.Mutex
	unmounted bool
}

// cacheTimeout is how long the kernel may trust entries, negative
// lookups and attributes. The tree never changes while mounted, so the
// only reason not to say "forever" is to stay within what the kernel
// handles without surprises.
const cacheTimeout = time.Hour

// Mount mounts the read-only tree of m at dir (an existing directory) and
// serves it until Unmount. The filesystem serves m's Tree and relies on
// the rules manifest.Validate enforces: a manifest from Decode is taken as
// it is, any other is validated first. m must not change while mounted.
//
// With opts.Keeper holding a live connection for dir, Mount serves that
// connection instead (Resumed reports it): m must be the manifest it was
// made with.
func Mount(dir string, m *manifest.Manifest, b Backend, opts Options) (*FS, error) {
	t, err := newTree(m)
	if err != nil {
		return nil, err
	}
	fsys := &FS{dir: dir, tree: t, backend: b, opts: opts}
	if opts.Debug {
		fsys.logger = log.New(os.Stderr, "lazyfs: ", log.Lmicroseconds)
	}
	if k := opts.Keeper; k != nil && k.Holds(dir) {
		ok, err := fsys.takeOver()
		if err != nil {
			return nil, err
		}
		if ok {
			return fsys, nil
		}
	}
	if err := fsys.mount(); err != nil {
		return nil, err
	}
	return fsys, nil
}

// setReadAhead sets the readahead window of the filesystem mounted at dir.
// A FUSE mount's backing device info is named after its anonymous device
// number.
func setReadAhead(dev uint64, kb int) error {
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(kb)), 0); err != nil {
		return fmt.Errorf("lazyfs: setting readahead: %w", err)
	}
	return nil
}

// Dir is the mount point.
func (f *FS) Dir() string { return f.dir }

// Resumed reports whether Mount took over a connection a previous
// process had kept, rather than mounting: what was mounted on top of the
// directory before (an overlay) still works.
func (f *FS) Resumed() bool { return f.resumed }

// Stats returns the read counters.
func (f *FS) Stats() Stats {
	return Stats{LocalReads: f.localReads.Load(), RemoteReads: f.remoteReads.Load()}
}

// PassthroughOffered reports whether the kernel offered FUSE passthrough
// when the mount was set up. Whether files are actually served through it
// also needs Options.Passthrough and the privilege to register backing
// files; the mount falls back to normal reads when registering fails.
func (f *FS) PassthroughOffered() bool {
	return f.server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH != 0
}

func (f *FS) passthroughUsable() bool { return f.passthrough.Load() }

// registerBacking registers file as a backing file for passthrough. A
// refusal (no privilege, stacking too deep) stops passthrough for the
// mount; the open is then served through this process.
func (f *FS) registerBacking(file *os.File) (int32, bool) {
	id, errno := f.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(file.Fd())})
	if errno != 0 {
		if f.passthrough.CompareAndSwap(true, false) {
			f.logf("passthrough refused by the kernel, reading local files through this process: %v", errno)
		}
		return 0, false
	}
	return id, true
}

func (f *FS) unregisterBacking(id int32) {
	// ENOENT: an earlier process closed it already and died before
	// recording that.
	if errno := f.server.UnregisterBackingFd(id); errno != 0 && errno != unix.ENOENT {
		f.logf("closing backing ID %d: %v", id, errno)
	}
}

func (f *FS) logf(format string, args ...any) {
	if f.logger != nil {
		f.logger.Printf(format, args...)
		return
	}
	log.Printf("lazyfs: %s: "+format, append([]any{f.dir}, args...)...)
}

// Unmount unmounts the tree, waits until the server has stopped, and
// lets the keeper close the connection.
//
// Unmount the overlay on top first: an overlay holds on to its lower
// filesystem, so while one is mounted the mount point goes away at once but
// the kernel keeps sending requests, and Unmount keeps serving them and
// returns only when the overlay is unmounted. It fails if the mount point
// itself is busy (a process has its cwd or a file open there).
func (f *FS) Unmount() error {
	f.unmountMu.Lock()
	defer f.unmountMu.Unlock()
	if f.unmounted {
		return nil
	}
	var err error
	// The kernel may take a moment to let go of files just closed.
	for delay := 5 * time.Millisecond; ; delay *= 2 {
		err = unix.Unmount(f.dir, 0)
		if !errors.Is(err, unix.EBUSY) || delay > 80*time.Millisecond {
			break
		}
		time.Sleep(delay)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("lazyfs: unmounting %s: %w", f.dir, err)
	}
	f.server.Wait()
	f.unmounted = true
	return f.release()
}

// release lets go of what outlives the server: the keeper's copies and the
// table of open files.
func (f *FS) release() error {
	var errs []error
	if k := f.opts.Keeper; k != nil {
		errs = append(errs, k.Drop(f.dir))
	}
	if f.opens != nil {
		errs = append(errs, f.opens.close())
	}
	return errors.Join(errs...)
}
