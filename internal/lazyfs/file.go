package lazyfs

import (
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// fuseUniqueResend marks a request the kernel queued again after
// FUSE_NOTIFY_RESEND (include/uapi/linux/fuse.h).
const fuseUniqueResend = 1 << 63

// openLocks serialize opens and releases per inode (striped), so what an
// open decides from the inode's other files and the backend's answer
// cannot be raced by another open of the same inode.
const openLocks = 64

// handle is what this process keeps of an open file read through it. A
// file that was not local when opened switches to the local copy once
// there is one.
type handle struct {
	idx   int
	local atomic.Pointer[os.File]
}

// Open opens a regular file for reading.
//
// Page-cache opens ask the kernel to keep the cache across opens
// (FOPEN_KEEP_CACHE): the tree is frozen, so a page once read is right
// forever, whether it came from the source host or the local replica.
// None needs a FLUSH on close (FOPEN_NOFLUSH): there is nothing to flush,
// and a process closing a file while no server runs would wait for one.
//
// A local file is passed through to its replica file (the kernel reads it
// without this process) when the mount may, unless the inode has
// page-cache opens; the inode's passthrough opens share one backing ID,
// registered by the first and closed after the last. An inode with
// passthrough opens gets passthrough for every new open too: the kernel
// fails any other kind of open on it.
func (r *rawFS) Open(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	i, ok := r.node(in.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY || in.Flags&syscall.O_TRUNC != 0 {
		return fuse.EROFS
	}
	if r.fs.tree.entries[i].Type != manifest.TypeFile {
		return fuse.EINVAL
	}
	node := uint32(in.NodeId)
	mu := &r.fs.openMu[i%openLocks]
	mu.Lock()
	defer mu.Unlock()
	t := r.fs.opens
	t.mu.Lock()
	if in.Unique&fuseUniqueResend != 0 {
		// Resent after a crash: the dead process may have recorded
		// it before dying without an answer.
		if rec, ok := t.byOpen(in.Unique &^ fuseUniqueResend); ok && rec.node == node {
			t.mu.Unlock()
			setOpenOut(out, rec)
			return fuse.OK
		}
	}
	cur := t.inode(node)
	t.mu.Unlock()

	kind, backing := openCached, int32(0)
	var local *os.File
	switch {
	case cur.passthrough > 0:
		kind, backing = openPassthrough, cur.backing
	default:
		f, ok, err := r.fs.backend.OpenLocal(i)
		if err != nil {
			return fuse.Status(toErrno(err))
		}
		if ok {
			local = f
			if cur.cached == 0 && r.fs.passthroughUsable() {
				if id, ok := r.fs.registerBacking(f); ok {
					kind, backing = openPassthrough, id
					f.Close()
					local = nil
				}
			}
		}
	}
	t.mu.Lock()
	fh, err := t.add(node, in.Unique&^fuseUniqueResend, kind, backing)
	t.mu.Unlock()
	if err != nil {
		if local != nil {
			local.Close()
		}
		if kind == openPassthrough && cur.passthrough == 0 {
			r.fs.unregisterBacking(backing)
		}
		r.fs.logf("opening %s: %v", r.fs.tree.entries[i].Path, err)
		return fuse.Status(syscall.ENFILE)
	}
	if kind == openCached {
		h := &handle{idx: i}
		if local != nil {
			h.local.Store(local)
		}
		r.fs.handles.Store(fh, h)
	}
	setOpenOut(out, record{fh: fh, kind: kind, backing: backing})
	return fuse.OK
}

func setOpenOut(out *fuse.OpenOut, rec record) {
	out.Fh = rec.fh
	if rec.kind == openPassthrough {
		// FOPEN_KEEP_CACHE is refused with passthrough, and means
		// nothing for it.
		out.OpenFlags = fuse.FOPEN_PASSTHROUGH | fuse.FOPEN_NOFLUSH
		out.BackingID = rec.backing
		return
	}
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
}

// handleOf returns this process's handle of fh, making one for a file an
// earlier process opened (or one it cannot place: then read by node).
func (r *rawFS) handleOf(fh uint64, i int) *handle {
	if h, ok := r.fs.handles.Load(fh); ok {
		return h.(*handle)
	}
	r.fs.opens.mu.Lock()
	_, known := r.fs.opens.lookup(fh)
	r.fs.opens.mu.Unlock()
	h := &handle{idx: i}
	if !known {
		return h
	}
	got, _ := r.fs.handles.LoadOrStore(fh, h)
	return got.(*handle)
}

func (r *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	i, ok := r.node(in.NodeId)
	if !ok {
		return nil, fuse.Status(syscall.ESTALE)
	}
	h := r.handleOf(in.Fh, i)
	off := int64(in.Offset)
	if f := h.localFile(r.fs.backend); f != nil {
		r.fs.localReads.Add(1)
		return readLocal(f, buf, off)
	}
	r.fs.remoteReads.Add(1)
	size := r.fs.tree.entries[i].Size
	if off >= size {
		return fuse.ReadResultData(nil), fuse.OK
	}
	// Never ask past the manifest's size: the file is frozen at it.
	dest := buf
	if int64(len(dest)) > size-off {
		dest = dest[:size-off]
	}
	ctx := &fuse.Context{Caller: in.Caller, Cancel: cancel}
	nr, err := readFullRemote(ctx, r.fs.backend, i, dest, off)
	if err != nil {
		return nil, fuse.Status(toErrno(err))
	}
	return fuse.ReadResultData(dest[:nr]), fuse.OK
}

// localFile returns the local copy once there is one.
func (h *handle) localFile(b Backend) *os.File {
	if f := h.local.Load(); f != nil {
		return f
	}
	f, ok, err := b.OpenLocal(h.idx)
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

func (h *handle) close() {
	if f := h.local.Load(); f != nil {
		f.Close()
	}
}

// Release forgets an open file. The last passthrough file of an inode
// closes the backing ID before the record goes, so a crash in between
// only makes the next process close it again.
func (r *rawFS) Release(_ <-chan struct{}, in *fuse.ReleaseIn) {
	if h, ok := r.fs.handles.LoadAndDelete(in.Fh); ok {
		h.(*handle).close()
	}
	t := r.fs.opens
	t.mu.Lock()
	rec, ok := t.lookup(in.Fh)
	t.mu.Unlock()
	if !ok {
		return
	}
	mu := &r.fs.openMu[int(rec.node-1)%openLocks]
	mu.Lock()
	defer mu.Unlock()
	t.mu.Lock()
	cur := t.inode(rec.node)
	t.mu.Unlock()
	if rec.kind == openPassthrough && cur.passthrough == 1 {
		r.fs.unregisterBacking(rec.backing)
	}
	t.mu.Lock()
	t.remove(in.Fh)
	t.mu.Unlock()
}

// readLocal fills dest from f at off; os.File.ReadAt already loops on
// short reads, stopping early only at end of file.
func readLocal(f *os.File, dest []byte, off int64) (fuse.ReadResult, fuse.Status) {
	nr, err := f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, fuse.Status(toErrno(err))
	}
	return fuse.ReadResultData(dest[:nr]), fuse.OK
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
