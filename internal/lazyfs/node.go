package lazyfs

import (
	"slices"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// rawFS answers the kernel's requests. It keeps no per-node state: a node
// ID is the inode number, the manifest index of the inode's first entry
// plus one (so the root is FUSE_ROOT_ID), and every answer is computed
// from the manifest. That is what lets another process answer requests
// about nodes this one told the kernel about: the kernel keeps node IDs
// for as long as it likes and never repeats the LOOKUP that made them.
// LOOKUP counts are not kept either, so FORGET has nothing to do.
type rawFS struct {
	fuse.RawFileSystem
	fs *FS
}

func (r *rawFS) String() string { return "lazyfs" }

// node returns the entry index of a node ID the kernel sent, false for
// one this tree never gave out.
func (r *rawFS) node(id uint64) (int, bool) {
	t := r.fs.tree
	if id == 0 || id > uint64(len(t.entries)) {
		return 0, false
	}
	i := int(id - 1)
	return i, t.Leader(i) == i
}

func (r *rawFS) entryOut(i int, out *fuse.EntryOut) {
	t := r.fs.tree
	l := t.Leader(i)
	out.NodeId = t.ino(l)
	out.Generation = 0
	r.fs.fillAttr(l, &out.Attr)
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(cacheTimeout)
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

func (r *rawFS) Lookup(_ <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	p, ok := r.node(h.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	t := r.fs.tree
	if t.entries[p].Type != manifest.TypeDir {
		return fuse.ENOTDIR
	}
	i, ok := t.Lookup(p, name)
	if !ok {
		// A negative entry the kernel may cache: the tree is frozen.
		out.NodeId = 0
		out.SetEntryTimeout(cacheTimeout)
		return fuse.OK
	}
	r.entryOut(i, out)
	return fuse.OK
}

func (r *rawFS) Forget(uint64, uint64) {}

func (r *rawFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	i, ok := r.node(in.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	r.fs.fillAttr(i, &out.Attr)
	out.SetTimeout(cacheTimeout)
	return fuse.OK
}

func (r *rawFS) Readlink(_ <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	i, ok := r.node(h.NodeId)
	if !ok {
		return nil, fuse.Status(syscall.ESTALE)
	}
	e := &r.fs.tree.entries[i]
	if e.Type != manifest.TypeSymlink {
		return nil, fuse.EINVAL
	}
	return []byte(e.Target), fuse.OK
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

// GetXAttr answers with the value's size and ERANGE when dest is too
// small; go-fuse turns that into the size for a size query.
func (r *rawFS) GetXAttr(_ <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	i, ok := r.node(h.NodeId)
	if !ok {
		return 0, fuse.Status(syscall.ESTALE)
	}
	if !servedXattr(attr) {
		return 0, fuse.ENOATTR
	}
	v, ok := r.fs.tree.entries[i].Xattrs[attr]
	if !ok {
		return 0, fuse.ENOATTR
	}
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (r *rawFS) ListXAttr(_ <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	i, ok := r.node(h.NodeId)
	if !ok {
		return 0, fuse.Status(syscall.ESTALE)
	}
	xs := r.fs.tree.entries[i].Xattrs
	names := make([]string, 0, len(xs))
	size := 0
	for k := range xs {
		if servedXattr(k) {
			names = append(names, k)
			size += len(k) + 1
		}
	}
	if len(dest) < size {
		return uint32(size), fuse.ERANGE
	}
	slices.Sort(names)
	off := 0
	for _, k := range names {
		off += copy(dest[off:], k)
		dest[off] = 0
		off++
	}
	return uint32(off), fuse.OK
}

func (r *rawFS) StatFs(_ <-chan struct{}, _ *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := r.fs.tree
	const bsize = 4096
	out.Bsize = bsize
	out.Frsize = bsize
	out.Blocks = uint64(t.totalBytes+bsize-1) / bsize
	out.Files = uint64(len(t.entries))
	out.NameLen = 255
	// Nothing free: it is read-only.
	return fuse.OK
}

// Directories: a listing is ".", "..", then the children in name order;
// the entry at position p carries offset p+1, where the next READDIR
// starts. Nothing is kept between requests.

func (r *rawFS) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	i, ok := r.node(in.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	if r.fs.tree.entries[i].Type != manifest.TypeDir {
		return fuse.ENOTDIR
	}
	// The listing never changes, so the kernel may cache it.
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (r *rawFS) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.readDir(in, out, false)
}

// ReadDirPlus also answers the lookup of each child listed; "." and ".."
// go without (node ID 0), which the kernel skips.
func (r *rawFS) ReadDirPlus(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.readDir(in, out, true)
}

func (r *rawFS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	d, ok := r.node(in.NodeId)
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	t := r.fs.tree
	kids := t.Children(d)
	for p := int(min(in.Offset, uint64(len(kids)+2))); p < len(kids)+2; p++ {
		de := fuse.DirEntry{Mode: syscall.S_IFDIR, Off: uint64(p + 1)}
		child := -1
		switch p {
		case 0:
			de.Name, de.Ino = ".", t.ino(d)
		case 1:
			de.Name, de.Ino = "..", t.ino(t.parentDir(d))
		default:
			child = kids[p-2]
			de.Name, de.Mode, de.Ino = t.Name(child), t.entries[child].Type.UnixType(), t.ino(child)
		}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		if child >= 0 {
			r.entryOut(child, eo)
		}
	}
	return fuse.OK
}

func (r *rawFS) ReleaseDir(*fuse.ReleaseIn) {}

// Read-only refusals: the mount is read-only, so the VFS refuses these
// before they get here; should one arrive, it gets EROFS rather than
// go-fuse's ENOSYS, which the kernel would remember as "not implemented".

func (r *rawFS) SetAttr(<-chan struct{}, *fuse.SetAttrIn, *fuse.AttrOut) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) Mknod(<-chan struct{}, *fuse.MknodIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) Mkdir(<-chan struct{}, *fuse.MkdirIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) Unlink(<-chan struct{}, *fuse.InHeader, string) fuse.Status { return fuse.EROFS }

func (r *rawFS) Rmdir(<-chan struct{}, *fuse.InHeader, string) fuse.Status { return fuse.EROFS }

func (r *rawFS) Rename(<-chan struct{}, *fuse.RenameIn, string, string) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) Link(<-chan struct{}, *fuse.LinkIn, string, *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) Symlink(<-chan struct{}, *fuse.InHeader, string, string, *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) SetXAttr(<-chan struct{}, *fuse.SetXAttrIn, string, []byte) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) RemoveXAttr(<-chan struct{}, *fuse.InHeader, string) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) Create(<-chan struct{}, *fuse.CreateIn, string, *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) Tmpfile(<-chan struct{}, *fuse.CreateIn, *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}

func (r *rawFS) Write(<-chan struct{}, *fuse.WriteIn, []byte) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}

func (r *rawFS) Fallocate(<-chan struct{}, *fuse.FallocateIn) fuse.Status { return fuse.EROFS }
