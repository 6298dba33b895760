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
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
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
func Mount(dir string, m *manifest.Manifest, b Backend, opts Options) (*FS, error) {
	t, err := newTree(m)
	if err != nil {
		return nil, err
	}
	fsys := &FS{dir: dir, tree: t, backend: b, opts: opts}
	timeout := cacheTimeout
	mo := fuse.MountOptions{
		// Root mounts with mount(2) directly; falling back to the setuid
		// fusermount would only hide a misconfiguration.
		DirectMountStrict: true,
		// Read-only at the mount level too, so the VFS refuses writes
		// before they reach us. nosuid and nodev are what fusermount
		// would set; they only govern using this mount directly: exec
		// and device opens through the overlay on top are checked
		// against the overlay's mount.
		DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
		// The engine and containers run as other users than us.
		AllowOther: true,
		FsName:     "cargo",
		Name:       "cargo",
		// default_permissions: the kernel checks access against the
		// modes and owners we report, as a local filesystem would, so
		// container users get the same answers as on the source host.
		Options: []string{"default_permissions", "ro"},
		// Allow READs of up to 1 MiB (the kernel's limit); how large
		// they are is up to readahead, see ReadAheadKB.
		MaxWrite: 1 << 20,
		// Replies carry bytes (ReadResultData), never a file to splice
		// from. With splicing on, go-fuse still sizes a pipe and writes
		// each reply's header into it before noticing, which costs time
		// and, for 1 MiB replies (more than a pipe holds), logs a
		// complaint per reply.
		DisableSplice: true,
		// Symlink targets never change either.
		EnableSymlinkCaching: true,
		Debug:                opts.Debug,
	}
	var logger *log.Logger
	if opts.Debug {
		logger = log.New(os.Stderr, "lazyfs: ", log.Lmicroseconds)
		mo.Logger = logger
	}
	if !opts.Passthrough {
		// Without passthrough the kernel gives this mount stacking depth
		// 0, which leaves room for stacking more than the one overlay.
		mo.DisabledCapabilities = fuse.CAP_PASSTHROUGH
	}
	root := &node{fs: fsys, idx: 0}
	server, err := fs.Mount(dir, root, &fs.Options{
		MountOptions:    mo,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// Report mode 0 as 0; go-fuse would otherwise invent 0644/0755.
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: t.ino(0)},
		// go-fuse's own diagnostics, e.g. a refused passthrough.
		Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("lazyfs: mounting at %s: %w", dir, err)
	}
	fsys.server = server
	if opts.ReadAheadKB > 0 {
		if err := setReadAhead(dir, opts.ReadAheadKB); err != nil {
			if uerr := server.Unmount(); uerr != nil {
				return nil, errors.Join(err, fmt.Errorf("lazyfs: unmounting %s: %w", dir, uerr))
			}
			return nil, err
		}
	}
	return fsys, nil
}

// setReadAhead sets the readahead window of the filesystem mounted at dir.
// A FUSE mount's backing device info is named after its anonymous device
// number.
func setReadAhead(dir string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("lazyfs: %w", err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(kb)), 0); err != nil {
		return fmt.Errorf("lazyfs: setting readahead: %w", err)
	}
	return nil
}

// Dir is the mount point.
func (f *FS) Dir() string { return f.dir }

// Stats returns the read counters.
func (f *FS) Stats() Stats {
	return Stats{LocalReads: f.localReads.Load(), RemoteReads: f.remoteReads.Load()}
}

// PassthroughOffered reports whether the kernel offered FUSE passthrough
// when the mount was set up. Whether files are actually served through it
// also needs Options.Passthrough and the privilege to register backing
// files; go-fuse falls back to normal reads when registering fails.
func (f *FS) PassthroughOffered() bool {
	return f.server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH != 0
}

// Unmount unmounts the tree and waits until the server has stopped.
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
	if err := f.server.Unmount(); err != nil {
		return fmt.Errorf("lazyfs: unmounting %s: %w", f.dir, err)
	}
	f.server.Wait()
	f.unmounted = true
	return nil
}
