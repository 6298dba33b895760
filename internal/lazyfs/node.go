package lazyfs

import (
	"context"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// node is one inode of the tree. Nodes are made on lookup (never ahead of
// time) and go-fuse drops them when the kernel forgets them. All members
// of a hard-link group share one node: it is keyed by the group's first
// entry, and go-fuse returns the existing Inode when a lookup through
// another path reports the same inode number.
type node struct {
	fs.Inode
	fs *FS
	// idx is the entry carrying this inode: for a hard-link group its
	// first member, whose content and attributes all members share.
	idx int

	// mu guards the open counts, which keep the kernel's per-inode I/O
	// mode consistent (see Open).
	mu sync.Mutex
	// cachedOpens counts open handles the kernel reads through the page
	// cache (remote ones, and local ones that could not pass through).
	cachedOpens int
	// passthroughOpens counts open handles offered for passthrough.
	passthroughOpens int
}

var (
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)

	// Every modifying operation go-fuse has an interface for answers
	// EROFS: some of go-fuse's defaults would report success (Unlink,
	// Rmdir) or ENOTSUP. The mount is read-only, so the VFS normally
	// refuses these before they get here.
	_ fs.NodeSetattrer     = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
	_ fs.NodeMkdirer       = (*node)(nil)
	_ fs.NodeMknoder       = (*node)(nil)
	_ fs.NodeCreater       = (*node)(nil)
	_ fs.NodeTmpfiler      = (*node)(nil)
	_ fs.NodeSymlinker     = (*node)(nil)
	_ fs.NodeLinker        = (*node)(nil)
	_ fs.NodeUnlinker      = (*node)(nil)
	_ fs.NodeRmdirer       = (*node)(nil)
	_ fs.NodeRenamer       = (*node)(nil)
	_ fs.NodeWriter        = (*node)(nil)
	_ fs.NodeAllocater     = (*node)(nil)
)

func (n *node) entry() *manifest.Entry { return &n.fs.tree.entries[n.idx] }

// newChild returns the Inode of entry i, a child of n, filling attr.
func (n *node) newChild(ctx context.Context, i int, attr *fuse.Attr) *fs.Inode {
	t := n.fs.tree
	l := t.Leader(i)
	n.fs.fillAttr(l, attr)
	child := &node{fs: n.fs, idx: l}
	return n.NewInode(ctx, child, fs.StableAttr{Mode: t.entries[l].Type.UnixType(), Ino: t.ino(l)})
}

func (f *FS) fillAttr(i int, a *fuse.Attr) {
	t := f.tree
	e := &t.entries[i]
	a.Ino = t.ino(i)
	a.Mode = e.UnixMode()
	a.Uid = e.UID
	a.Gid = e.GID
	a.Nlink = e.Nlink
	var size uint64
	switch e.Type {
	case manifest.TypeFile:
		size = uint64(e.Size)
	case manifest.TypeSymlink:
		size = uint64(len(e.Target))
	case manifest.TypeDir:
		// What most local filesystems report, and what tools like find
		// use to tell how many subdirectories to expect.
		a.Nlink = 2 + t.subdirs[i]
	case manifest.TypeChar, manifest.TypeBlock:
		a.Rdev = encodeDev(e.Rdev)
	}
	a.Size = size
	a.Blksize = 4096
	a.Blocks = (size + 511) / 512
	sec, nsec := splitNs(e.MtimeNs)
	a.Mtime, a.Mtimensec = sec, nsec
	a.Atime, a.Atimensec = sec, nsec
	a.Ctime, a.Ctimensec = sec, nsec
}

// splitNs turns nanoseconds since the epoch into the (seconds,
// nanoseconds) pair FUSE carries; seconds are two's complement for times
// before 1970, which the kernel reads back as signed.
func splitNs(ns int64) (uint64, uint32) {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec--
		nsec += 1e9
	}
	return uint64(sec), uint32(nsec)
}

// encodeDev converts a device number as stat(2) reports it to the 32-bit
// encoding FUSE attributes carry (the kernel's new_encode_dev). Numbers
// with a major above 4095 or a minor above 2^20-1 cannot be represented
// there; Linux does not hand those out for real devices.
func encodeDev(rdev uint64) uint32 {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}

func (n *node) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.fillAttr(n.idx, &out.Attr)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.entry().Type != manifest.TypeDir {
		return nil, syscall.ENOTDIR
	}
	i, ok := n.fs.tree.Lookup(n.idx, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return n.newChild(ctx, i, &out.Attr), 0
}

func (n *node) Readlink(context.Context) ([]byte, syscall.Errno) {
	e := n.entry()
	if e.Type != manifest.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.Target), 0
}

// servedXattr tells which attribute names are shown. Only the user
// namespace: an overlay on top reads trusted.overlay.* from its lower
// layers as instructions (opaque, redirect, metacopy), and security.*
// would grant capabilities or labels. manifest.Validate refuses any other
// namespace already; this check stays because it is what keeps the
// overlay's instructions out, even from a manifest altered after its
// validation.
func servedXattr(name string) bool {
	return strings.HasPrefix(name, "user.")
}

func (n *node) Getxattr(_ context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !servedXattr(attr) {
		return 0, syscall.ENODATA
	}
	v, ok := n.entry().Xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	xs := n.entry().Xattrs
	names := make([]string, 0, len(xs))
	size := 0
	for k := range xs {
		if servedXattr(k) {
			names = append(names, k)
			size += len(k) + 1
		}
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	slices.Sort(names)
	off := 0
	for _, k := range names {
		off += copy(dest[off:], k)
		dest[off] = 0
		off++
	}
	return uint32(off), 0
}

func (n *node) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	t := n.fs.tree
	const bsize = 4096
	out.Bsize = bsize
	out.Frsize = bsize
	out.Blocks = uint64(t.totalBytes+bsize-1) / bsize
	out.Files = uint64(len(t.entries))
	out.NameLen = 255
	// Nothing free: it is read-only.
	return 0
}

// Directories.

func (n *node) OpendirHandle(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.entry().Type != manifest.TypeDir {
		return nil, 0, syscall.ENOTDIR
	}
	// The listing never changes, so the kernel may cache it.
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle lists a directory: ".", "..", then the children in name
// order. go-fuse serializes calls on one handle, so it needs no lock.
type dirHandle struct {
	n *node
	// pos is the next position to list; an entry at position p is
	// reported with offset p+1, which Seekdir takes back.
	pos int
	// last is the child listed last, which READDIRPLUS looks up next.
	last int
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileLookuper     = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(context.Context) (*fuse.DirEntry, syscall.Errno) {
	t := d.n.fs.tree
	kids := t.Children(d.n.idx)
	p := d.pos
	var de fuse.DirEntry
	switch {
	case p == 0:
		de = fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: t.ino(d.n.idx)}
	case p == 1:
		de = fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: t.ino(t.parentDir(d.n.idx))}
	case p-2 < len(kids):
		c := kids[p-2]
		d.last = c
		de = fuse.DirEntry{Name: t.Name(c), Mode: t.entries[c].Type.UnixType(), Ino: t.ino(c)}
	default:
		return nil, 0
	}
	d.pos++
	de.Off = uint64(d.pos)
	return &de, 0
}

func (d *dirHandle) Seekdir(_ context.Context, off uint64) syscall.Errno {
	if off > uint64(len(d.n.fs.tree.Children(d.n.idx))+2) {
		return syscall.EINVAL
	}
	d.pos = int(off)
	return 0
}

// Lookup serves READDIRPLUS for the entry just listed without searching.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t := d.n.fs.tree
	if d.pos >= 3 && t.Name(d.last) == name {
		return d.n.newChild(ctx, d.last, &out.Attr), 0
	}
	return d.n.Lookup(ctx, name, out)
}

// Read-only refusals.

func (n *node) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Removexattr(context.Context, string) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *node) Tmpfile(context.Context, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *node) Symlink(context.Context, string, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Link(context.Context, fs.InodeEmbedder, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }

func (n *node) Rmdir(context.Context, string) syscall.Errno { return syscall.EROFS }

func (n *node) Rename(context.Context, string, fs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Write(context.Context, fs.FileHandle, []byte, int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (n *node) Allocate(context.Context, fs.FileHandle, uint64, uint64, uint32) syscall.Errno {
	return syscall.EROFS
}
