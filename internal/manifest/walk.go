package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WalkOptions adjusts WalkWith.
type WalkOptions struct {
	// Skipped, if not nil, is called with the path of each entry left out
	// of the manifest: sockets (meaningless on another host) and any type
	// Linux may add. Entries that vanish during the walk are left out
	// silently. Calls come one at a time, but within a large directory
	// not in name order.
	Skipped func(path string)
}

// Walk builds the manifest of the tree under root. It is WalkWith without
// options: sockets are skipped silently.
func Walk(ctx context.Context, root *os.Root) (*Manifest, error) {
	return WalkWith(ctx, root, WalkOptions{})
}

// WalkWith builds the manifest of the tree under root, never following a
// symlink and never leaving root.
//
// Order is depth first: a directory, then each child sorted by name (byte
// order), each child directory's subtree right after that child. Regular
// files with more than one link are grouped by (device, inode): the first
// path in walk order keeps LinkTo == NoLink and the others point at it; all
// of them get Nlink = the number of paths found, and the later ones take the
// first's Size so that a file growing during the walk still gives a
// consistent group. User xattrs are read from files and directories only,
// which is all Linux allows them on.
//
// The tree should be quiescent; an entry that changes type or identity
// between being listed and being opened fails the walk. The result is not
// validated: Validate (or the first Tree) checks it fits the limits.
func WalkWith(ctx context.Context, root *os.Root, opts WalkOptions) (*Manifest, error) {
	return walk(ctx, root, opts, chooseProbe)
}

// walk lets tests pick the xattr probe.
func walk(ctx context.Context, root *os.Root, opts WalkOptions, choose func(int, *unix.Stat_t) probeMode) (*Manifest, error) {
	w := &walker{ctx: ctx, root: root, opts: opts, m: &Manifest{}, choose: choose}
	if err := w.dir(-1, ".", devIno{}, 0); err != nil {
		return nil, err
	}
	if w.linked > 0 {
		w.countLinks()
	}
	return w.m, nil
}

type devIno struct{ dev, ino uint64 }

// pending is a child listed and stat'ed while its directory was open, not
// yet appended: its subtree must come first if an earlier sibling is a
// directory.
type pending struct {
	e     Entry
	id    devIno
	nlink uint64
}

type walker struct {
	ctx    context.Context
	root   *os.Root
	opts   WalkOptions
	m      *Manifest
	links  map[devIno]int // first index of each multiply linked file
	linked int            // entries with LinkTo set
	levels [][]pending    // reused per depth, to save allocations
	// ls are the listers that stat a directory's children: one, or
	// several at once over parts of a large directory.
	ls     []*lister
	ctxMu  sync.Mutex // a Context's Err is safe to call at once; test doubles are not
	choose func(rootfd int, st *unix.Stat_t) probeMode
	probe  probeMode
}

// lister stats the children of one directory, or a part of them, with
// buffers of its own.
type lister struct {
	w      *walker
	st     unix.Stat_t
	lnk    []byte    // readlink buffer
	xlist  []byte    // flistxattr buffer
	xval   []byte    // fgetxattr buffer
	xprobe []byte    // probe's list buffer
	part   []pending // what it stat'ed of a large directory
	steps  int
	// probe is how to ask cheaply whether a file has any xattrs, before
	// paying for openat, fstat, flistxattr and close (about 4 syscalls a
	// file, where most have none).
	probe probeMode
}

// parallelMin is the size of directory from which its children are
// stat'ed by several listers at once. The walk's profile is syscalls
// (fstatat and the xattr probe: 95% of BenchmarkWalk's CPU), which one
// goroutine makes on one core while the others idle; a small directory
// is not worth the goroutines. Tests lower it.
var parallelMin = 1024

// maxListers bounds the listers of one directory: more than the cores
// still help while stats wait for the disk on a cold cache.
const maxListers = 8

func (w *walker) lister(k int) *lister {
	for len(w.ls) <= k {
		w.ls = append(w.ls, &lister{w: w, probe: w.probe})
	}
	return w.ls[k]
}

// skipped reports path to WalkOptions.Skipped, one call at a time.
func (w *walker) skipped(path string) {
	if w.opts.Skipped == nil {
		return
	}
	w.ctxMu.Lock()
	defer w.ctxMu.Unlock()
	w.opts.Skipped(path)
}

func (w *walker) err() error {
	w.ctxMu.Lock()
	defer w.ctxMu.Unlock()
	return w.ctx.Err()
}

type probeMode uint8

const (
	probeNone probeMode = iota // always open the file
	probeAt                    // listxattrat(2), Linux 6.13+
	probeProc                  // llistxattr on /proc/self/fd/N/name
)

// dir lists directory path (entry idx, or the root when idx < 0) and then
// appends its children and their subtrees. It holds one descriptor, and
// only while listing, so depth costs no descriptors. Subdirectories are
// opened through os.Root and checked to be the directory that was listed,
// so a swapped-in symlink is neither followed nor mistaken for it.
func (w *walker) dir(idx int, path string, id devIno, depth int) error {
	if err := w.err(); err != nil {
		return err
	}
	f, err := w.root.Open(path)
	if err != nil {
		return fmt.Errorf("manifest: open directory %q: %w", path, err)
	}
	level, err := w.list(f, idx, path, id, depth)
	f.Close()
	if err != nil {
		return err
	}
	for k := range level {
		p := &level[k]
		i := len(w.m.Entries)
		p.e.Index = i
		if p.e.Type == TypeFile && p.nlink > 1 {
			if first, ok := w.links[p.id]; ok {
				p.e.LinkTo = first
				p.e.Size = w.m.Entries[first].Size
				w.linked++
			} else {
				if w.links == nil {
					w.links = make(map[devIno]int)
				}
				w.links[p.id] = i
			}
		}
		w.m.Entries = append(w.m.Entries, p.e)
		if p.e.Type == TypeDir {
			if err := w.dir(i, p.e.Path, p.id, depth+1); err != nil {
				return err
			}
		}
		p.e = Entry{} // let the pending copy's strings and maps go
	}
	return nil
}

// list checks that f is the expected directory, records its xattrs (and,
// for the root, its entry), and returns its children sorted by name.
func (w *walker) list(f *os.File, idx int, path string, id devIno, depth int) ([]pending, error) {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("manifest: stat %q: %w", path, err)
	}
	if idx < 0 {
		w.m.Entries = append(w.m.Entries, Entry{Path: ".", Type: TypeDir, LinkTo: NoLink, Nlink: 1})
		fillAttrs(&w.m.Entries[0], &st)
		idx = 0
		w.probe = w.choose(fd, &st)
		for _, l := range w.ls {
			l.probe = w.probe
		}
	} else if st.Mode&unix.S_IFMT != unix.S_IFDIR || (devIno{st.Dev, st.Ino}) != id {
		return nil, fmt.Errorf("manifest: %q changed during the walk", path)
	}
	xa, err := w.lister(0).xattrs(fd)
	if err != nil {
		return nil, fmt.Errorf("manifest: xattrs of %q: %w", path, err)
	}
	w.m.Entries[idx].Xattrs = xa

	// Names only: the types readdir gives are re-read by fstatat anyway.
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("manifest: list %q: %w", path, err)
	}
	slices.Sort(names)

	for len(w.levels) <= depth {
		w.levels = append(w.levels, nil)
	}
	level := w.levels[depth][:0]
	level, err = w.children(fd, path, names, level)
	if err != nil {
		return nil, err
	}
	w.levels[depth] = level
	return level, nil
}

// children stats names in directory fd (at path) and appends those to
// carry to level, in names' order. A large directory is split into runs
// of names that listers stat at once, each into a level of its own; the
// result is the same as one lister's, so the walk stays deterministic.
func (w *walker) children(fd int, path string, names []string, level []pending) ([]pending, error) {
	k := min(maxListers, max(2, runtime.GOMAXPROCS(0)), len(names)/(parallelMin/2))
	if len(names) < parallelMin || k < 2 {
		return w.lister(0).run(fd, path, names, level)
	}
	errs := make([]error, k)
	var wg sync.WaitGroup
	for j := range k {
		lo, hi := j*len(names)/k, (j+1)*len(names)/k
		l := w.lister(j)
		if cap(l.part) < hi-lo {
			l.part = make([]pending, 0, hi-lo)
		}
		wg.Go(func() {
			l.part, errs[j] = l.run(fd, path, names[lo:hi], l.part[:0])
		})
	}
	wg.Wait()
	for j := range k {
		if errs[j] != nil {
			return nil, errs[j] // the first in name order
		}
	}
	for j := range k {
		// Each lister's part is reused for the next large directory:
		// a new one each time was as much garbage as the level itself.
		l := w.ls[j]
		level = append(level, l.part...)
		clear(l.part)
	}
	return level, nil
}

// run stats names, in order, and appends what to carry to level.
func (l *lister) run(fd int, path string, names []string, level []pending) ([]pending, error) {
	for _, name := range names {
		if l.steps++; l.steps&1023 == 0 {
			if err := l.w.err(); err != nil {
				return nil, err
			}
		}
		child := name
		if path != "." {
			child = path + "/" + name
		}
		p, ok, err := l.child(fd, name, child)
		if err != nil {
			return nil, err
		}
		if ok {
			level = append(level, p)
		}
	}
	return level, nil
}

// child stats one name in the open directory dirfd. Everything goes
// through dirfd with a single path component and no symlink following, so
// it cannot leave the directory.
func (l *lister) child(dirfd int, name, path string) (pending, bool, error) {
	st := &l.st
	if err := fstatat(dirfd, name, st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return pending{}, false, nil // removed since listed
		}
		return pending{}, false, fmt.Errorf("manifest: stat %q: %w", path, err)
	}
	p := pending{
		e:     Entry{Path: path, LinkTo: NoLink, Nlink: 1},
		id:    devIno{st.Dev, st.Ino},
		nlink: uint64(st.Nlink),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		p.e.Type = TypeDir // its xattrs are read when it is listed
	case unix.S_IFREG:
		p.e.Type = TypeFile
		p.e.Size = st.Size
		var xa map[string][]byte
		var err error
		if l.mayHaveXattrs(dirfd, name) {
			xa, err = l.fileXattrs(dirfd, name, p.id)
		}
		if err != nil {
			return pending{}, false, fmt.Errorf("manifest: xattrs of %q: %w", path, err)
		}
		p.e.Xattrs = xa
	case unix.S_IFLNK:
		p.e.Type = TypeSymlink
		t, err := l.readlink(dirfd, name, st.Size)
		if err != nil {
			return pending{}, false, fmt.Errorf("manifest: readlink %q: %w", path, err)
		}
		p.e.Target = t
	case unix.S_IFIFO:
		p.e.Type = TypeFIFO
	case unix.S_IFCHR:
		p.e.Type = TypeChar
		p.e.Rdev = uint64(st.Rdev)
	case unix.S_IFBLK:
		p.e.Type = TypeBlock
		p.e.Rdev = uint64(st.Rdev)
	default:
		l.w.skipped(path)
		return pending{}, false, nil
	}
	fillAttrs(&p.e, st)
	return p, true, nil
}

func fillAttrs(e *Entry, st *unix.Stat_t) {
	e.Mode = uint32(st.Mode) & 07777
	e.UID = st.Uid
	e.GID = st.Gid
	e.MtimeNs = st.Mtim.Nano()
}

func (l *lister) readlink(dirfd int, name string, size int64) (string, error) {
	if n := max(int(size)+1, 256); len(l.lnk) < n && n <= 1<<16 {
		l.lnk = make([]byte, n)
	}
	for {
		n, err := unix.Readlinkat(dirfd, name, l.lnk)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", err
		}
		// A full buffer may mean a truncated target: retry bigger.
		if n < len(l.lnk) {
			return string(l.lnk[:n]), nil
		}
		if len(l.lnk) >= 1<<16 {
			return "", unix.ENAMETOOLONG
		}
		l.lnk = make([]byte, 2*len(l.lnk))
	}
}

// fileXattrs opens the regular file name for its xattrs. O_NONBLOCK and the
// identity check guard against the name having become a FIFO or a device
// since fstatat: opening those can block or have side effects.
func (l *lister) fileXattrs(dirfd int, name string, id devIno) (map[string][]byte, error) {
	fd, err := openat(dirfd, name)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || (devIno{st.Dev, st.Ino}) != id {
		return nil, errors.New("changed during the walk")
	}
	return l.xattrs(fd)
}

// xattrs returns fd's user.* xattrs, or nil if it has none or the
// filesystem has no xattr support.
func (l *lister) xattrs(fd int) (map[string][]byte, error) {
	if l.xlist == nil {
		l.xlist = make([]byte, 4096)
	}
	var n int
	for {
		var err error
		n, err = unix.Flistxattr(fd, l.xlist)
		switch {
		case err == nil:
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ERANGE):
			size, err := unix.Flistxattr(fd, nil)
			if err != nil && !errors.Is(err, unix.EINTR) {
				return nil, err
			}
			l.xlist = make([]byte, max(size, 2*len(l.xlist)))
			continue
		case errors.Is(err, unix.ENOTSUP):
			return nil, nil
		default:
			return nil, err
		}
		break
	}
	var out map[string][]byte
	for list := l.xlist[:n]; len(list) > 0; {
		raw, rest, _ := bytes.Cut(list, []byte{0})
		list = rest
		if !isUser(raw) {
			continue
		}
		name := string(raw)
		v, ok, err := l.xattr(fd, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string][]byte)
		}
		out[name] = v
	}
	return out, nil
}

func isUser(name []byte) bool {
	return len(name) > len("user.") && string(name[:len("user.")]) == "user."
}

func (l *lister) xattr(fd int, name string) ([]byte, bool, error) {
	if l.xval == nil {
		l.xval = make([]byte, 64<<10) // XATTR_SIZE_MAX: no retries in practice
	}
	for {
		n, err := unix.Fgetxattr(fd, name, l.xval)
		switch {
		case err == nil:
			return append([]byte{}, l.xval[:n]...), true, nil
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ENODATA):
			return nil, false, nil // removed since listed
		case errors.Is(err, unix.ERANGE):
			size, err := unix.Fgetxattr(fd, name, nil)
			if err != nil && !errors.Is(err, unix.EINTR) {
				return nil, false, err
			}
			l.xval = make([]byte, max(size, 2*len(l.xval)))
		default:
			return nil, false, err
		}
	}
}

// mayHaveXattrs lists name's xattrs with one syscall that does not follow
// a final symlink and stays inside dirfd, and says whether any is a user
// xattr. Any doubt (an error, a list too long) answers true: the caller
// then reads them the thorough way.
func (l *lister) mayHaveXattrs(dirfd int, name string) bool {
	if l.probe == probeNone {
		return true
	}
	if len(l.xprobe) == 0 {
		l.xprobe = make([]byte, 64<<10) // XATTR_LIST_MAX
	}
	var n int
	var err error
	for {
		if l.probe == probeAt {
			n, err = listxattrat(dirfd, name, l.xprobe)
		} else {
			n, err = unix.Llistxattr(procPath(dirfd, name), l.xprobe)
		}
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return false
	}
	if err != nil {
		return true
	}
	for list := l.xprobe[:n]; len(list) > 0; {
		var raw []byte
		raw, list, _ = bytes.Cut(list, []byte{0})
		if isUser(raw) {
			return true
		}
	}
	return false
}

// chooseProbe picks the cheapest probe that works on the root directory fd
// (whose stat is st). listxattrat may be missing (ENOSYS) or refused by a
// seccomp filter (EPERM); /proc may be absent or hide magic links.
func chooseProbe(fd int, st *unix.Stat_t) probeMode {
	buf := make([]byte, 64<<10)
	if _, err := listxattrat(fd, ".", buf); err == nil || errors.Is(err, unix.ENOTSUP) {
		return probeAt
	}
	var pst unix.Stat_t
	if unix.Stat(procPath(fd, "."), &pst) == nil && pst.Dev == st.Dev && pst.Ino == st.Ino {
		if _, err := unix.Llistxattr(procPath(fd, "."), buf); err == nil || errors.Is(err, unix.ENOTSUP) {
			return probeProc
		}
	}
	return probeNone
}

// listxattrat is listxattrat(2) without following a final symlink; x/sys
// has the number but no wrapper yet.
func listxattrat(dirfd int, name string, dest []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	var d unsafe.Pointer
	if len(dest) > 0 {
		d = unsafe.Pointer(&dest[0])
	}
	r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(d), uintptr(len(dest)), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// procPath names name in directory dirfd through procfs. The magic link
// resolves to the directory itself, wherever it has moved, and name is one
// component looked up without following a final symlink (by the l*xattr
// calls): as contained as an *at call.
func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// countLinks sets Nlink on every member of every hard-link group found.
func (w *walker) countLinks() {
	size := make(map[int]uint32, len(w.links))
	for i := range w.m.Entries {
		if g := w.m.Entries[i].LinkTo; g != NoLink {
			size[g]++
		}
	}
	for i := range w.m.Entries {
		e := &w.m.Entries[i]
		g := e.LinkTo
		if g == NoLink {
			g = i
		}
		if c, ok := size[g]; ok {
			e.Nlink = c + 1
		}
	}
}

// Slow filesystems (FUSE, NFS) can return EINTR; the Go runtime's
// preemption signals make that likely. The os package retries; so do we.

func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	for {
		err := unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func openat(dirfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}
