package lazyfs

import (
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// Open opens a regular file for reading.
//
// Both kinds of handle ask the kernel to keep its page cache across opens
// (FOPEN_KEEP_CACHE): the tree is frozen, so a page once read is right
// forever, whether it came from the source host or the local replica, and
// dropping it on every open would only refetch identical bytes.
//
// Passthrough constrains the kernel: an inode is either read through the
// page cache by all its open files or passed through to the backing file
// by all of them, and an open that would mix the two fails with EIO. So a
// handle is offered for passthrough only while no page-cache handle is
// open on the inode, and the decision is made under n.mu together with
// the OpenLocal call, so a concurrent open cannot slip in between.
func (n *node) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	if n.entry().Type != manifest.TypeFile {
		return nil, 0, syscall.EINVAL
	}
	// No FLUSH round trip on close: there is nothing to flush, and we
	// keep no locks.
	const cached = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	n.mu.Lock()
	defer n.mu.Unlock()
	f, ok, err := n.fs.backend.OpenLocal(n.idx)
	if err != nil {
		return nil, 0, toErrno(err)
	}
	if ok {
		h := &localHandle{n: n, f: f}
		if n.fs.opts.Passthrough && n.cachedOpens == 0 {
			// go-fuse registers the fd as backing file on the first
			// passthrough open of the inode and reuses it for later
			// ones; if the kernel refuses, go-fuse stops trying for
			// the whole mount and the handle is read normally. It also
			// drops KEEP_CACHE, which means nothing for passthrough.
			n.passthroughOpens++
			return &passthroughHandle{h}, cached, 0
		}
		n.cachedOpens++
		return h, cached, 0
	}
	h := &remoteHandle{n: n}
	if n.passthroughOpens > 0 {
		// Only reachable if the backend broke its promise that local
		// stays local. Direct I/O opens do not take part in the
		// kernel's I/O mode, so this one cannot fail the open.
		h.direct = true
		return h, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH, 0
	}
	n.cachedOpens++
	return h, cached, 0
}

// localHandle reads a complete local copy.
type localHandle struct {
	n *node
	f *os.File
}

var (
	_ fs.FileReader   = (*localHandle)(nil)
	_ fs.FileReleaser = (*localHandle)(nil)
)

func (h *localHandle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.n.fs.localReads.Add(1)
	return readLocal(h.f, dest, off)
}

func (h *localHandle) Release(context.Context) syscall.Errno {
	h.n.mu.Lock()
	h.n.cachedOpens--
	h.n.mu.Unlock()
	h.f.Close()
	return 0
}

// passthroughHandle is a localHandle offered for passthrough.
type passthroughHandle struct{ *localHandle }

var _ fs.FilePassthroughFder = passthroughHandle{}

func (h passthroughHandle) PassthroughFd() (int, bool) {
	// The kernel takes its own reference on the file when registering
	// it, so closing f on Release does not disturb it.
	return int(h.f.Fd()), true
}

func (h passthroughHandle) Release(context.Context) syscall.Errno {
	h.n.mu.Lock()
	h.n.passthroughOpens--
	h.n.mu.Unlock()
	h.f.Close()
	return 0
}

// readLocal fills dest from f at off; os.File.ReadAt already loops on
// short reads, stopping early only at end of file.
func readLocal(f *os.File, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	nr, err := f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest[:nr]), 0
}

// remoteHandle reads a file that was not local when opened. Once the
// backend has the file locally, the handle switches to the local copy.
type remoteHandle struct {
	n      *node
	direct bool
	local  atomic.Pointer[os.File]
}

var (
	_ fs.FileReader   = (*remoteHandle)(nil)
	_ fs.FileReleaser = (*remoteHandle)(nil)
)

func (h *remoteHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if f := h.localFile(); f != nil {
		h.n.fs.localReads.Add(1)
		return readLocal(f, dest, off)
	}
	h.n.fs.remoteReads.Add(1)
	size := h.n.entry().Size
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	// Never ask past the manifest's size: the file is frozen at it.
	if int64(len(dest)) > size-off {
		dest = dest[:size-off]
	}
	nr, err := readFullRemote(ctx, h.n.fs.backend, h.n.idx, dest, off)
	if err != nil {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest[:nr]), 0
}

// localFile returns the local copy once there is one.
func (h *remoteHandle) localFile() *os.File {
	if f := h.local.Load(); f != nil {
		return f
	}
	f, ok, err := h.n.fs.backend.OpenLocal(h.n.idx)
	if err != nil || !ok {
		// An error here is not the reader's problem: ReadAt can
		// still serve it.
		return nil
	}
	if !h.local.CompareAndSwap(nil, f) {
		f.Close()
		return h.local.Load()
	}
	return f
}

func (h *remoteHandle) Release(context.Context) syscall.Errno {
	if !h.direct {
		h.n.mu.Lock()
		h.n.cachedOpens--
		h.n.mu.Unlock()
	}
	if f := h.local.Load(); f != nil {
		f.Close()
	}
	return 0
}

// readFullRemote loops until dest is full or the content ends. A short
// reply to a page-cache read tells the kernel the file ends there (it
// shrinks its idea of the size), so partial answers would be wrong.
func readFullRemote(ctx context.Context, b Backend, idx int, dest []byte, off int64) (int, error) {
	total := 0
	stalls := 0
	for total < len(dest) {
		nr, err := b.ReadAt(ctx, idx, dest[total:], off+int64(total))
		total += nr
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return total, err
		}
		if nr == 0 {
			// io.ReaderAt forbids (0, nil); do not spin on a
			// backend that does it anyway.
			if stalls++; stalls > 3 {
				return total, io.ErrNoProgress
			}
		}
	}
	return total, nil
}

// toErrno maps an error to what the reader sees.
func toErrno(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	case errors.As(err, &errno) && localErrno(errno):
		return errno
	}
	return syscall.EIO
}

// localErrno reports errnos that mean the same to a reader as to the
// backend (space, permissions, limits). Network errnos from fetching
// (ECONNREFUSED, EHOSTUNREACH, ...) and ENOENT (which would claim a
// listed file does not exist) are I/O errors to a reader.
func localErrno(e syscall.Errno) bool {
	switch e {
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EACCES, syscall.EPERM, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EROFS:
		return true
	}
	return false
}
