// Package replica keeps the local copy of a federated volume while it is
// filled from the source host, and turns it into a plain local volume once
// complete.
//
// Layout under the volume's directory:
//
//	data/               the replica: the source tree as far as copied
//	partial/<index>     a large file being filled chunk by chunk
//	partial/<index>.log the chunks already in it, appended as they land
//	data/DIR/.cargo-tmp-<index>-<b|d>  a small file being written whole
//
// The replica is its own journal. A regular file is complete exactly when
// it stands at its path in data/ with the manifest's size: it is renamed
// there only after its content and metadata are written. A large file's
// log records each chunk after its bytes are written, so a crash loses at
// most the chunks in flight. Progress is therefore rebuilt from disk on
// start and never falls back.
package replica

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/dircache"
	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/manifest"
)

// ChunkSize is the unit in which large files are fetched and journaled.
const ChunkSize = 4 << 20

// LargeFile is the size from which a file is filled chunk by chunk rather
// than fetched whole.
const LargeFile = 2 * ChunkSize

const (
	dataDir    = "data"
	partialDir = "partial"
)

// Replica is one federated volume's local copy.
type Replica struct {
	root *os.Root // the volume's directory
	m    *manifest.Manifest
	tree *manifest.Tree // m's index: hard-link groups

	totalFiles int
	totalBytes int64

	dirs dircache.Cache // Create: a read may come before Skeleton

	mu    sync.Mutex
	done  []bool           // per entry: content complete in data/
	parts map[int]*Partial // open partial large files
	files int              // content-bearing files complete
	bytes int64            // their bytes, plus chunks of partial files
}

// Open opens the replica in dir (created if needed) for manifest m and
// rebuilds its progress from what is on disk. m is trusted once it has
// passed manifest.Validate (Decode's result has); any other is validated
// first.
func Open(dir string, m *manifest.Manifest) (*Replica, error) {
	tree, err := m.Tree()
	if err != nil {
		return nil, fmt.Errorf("opening replica: %w", err)
	}
	for _, d := range []string{dir, path.Join(dir, dataDir), path.Join(dir, partialDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("preparing replica: %w", err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening replica: %w", err)
	}
	r := &Replica{root: root, m: m, tree: tree, done: make([]bool, len(m.Entries)), parts: map[int]*Partial{}}
	r.dirs.Create = true
	r.totalFiles, r.totalBytes = m.Totals()
	if err := r.scan(); err != nil {
		root.Close()
		return nil, err
	}
	return r, nil
}

// Close releases the replica's open files.
func (r *Replica) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		p.close()
	}
	r.parts = map[int]*Partial{}
	r.dirs.Close()
	return r.root.Close()
}

func dataPath(e *manifest.Entry) string { return path.Join(dataDir, e.Path) }

func partialPath(i int, suffix string) string {
	return path.Join(partialDir, strconv.Itoa(i)+suffix)
}

// HasContent reports whether entry e carries file content of its own
// (a regular file that is not a later name of a hard-linked one).
func HasContent(e *manifest.Entry) bool { return e.HasContent() }

// Len is the number of manifest entries.
func (r *Replica) Len() int { return len(r.m.Entries) }

func (r *Replica) scan() error {
	// A new replica has nothing to find: skip a look-up per file.
	d, err := r.root.Open(dataDir)
	if err != nil {
		return err
	}
	names, _ := d.Readdirnames(1)
	d.Close()
	if len(names) == 0 {
		return nil
	}
	for i := range r.m.Entries {
		e := &r.m.Entries[i]
		if !HasContent(e) {
			continue
		}
		fi, err := r.root.Lstat(dataPath(e))
		if err == nil && fi.Mode().IsRegular() && fi.Size() == e.Size {
			r.done[i] = true
			r.files++
			r.bytes += e.Size
			continue
		}
		if errors.Is(err, fs.ErrNotExist) {
			// A crash may have left a writer's temporary file. Removing
			// it only saves space: a writer truncates its name anyway.
			for _, w := range []Writer{Background, OnDemand} {
				_ = r.root.Remove(path.Join(path.Dir(dataPath(e)), tmpName(i, w)))
			}
		}
		if e.Size >= LargeFile {
			chunks, err := readLog(r.root, i)
			if err != nil {
				return err
			}
			for c := range chunks {
				r.bytes += chunkLen(e.Size, c)
			}
		}
	}
	return nil
}

// Totals is what the whole copy moves.
func (r *Replica) Totals() (files int, bytes int64) { return r.totalFiles, r.totalBytes }

// Progress is what has been copied so far.
func (r *Replica) Progress() (files int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.files, r.bytes
}

// Complete reports whether every file's content is local.
func (r *Replica) Complete() bool {
	files, _ := r.Totals()
	done, _ := r.Progress()
	return done == files
}

// Done reports whether entry i's content is complete locally.
func (r *Replica) Done(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done[i]
}

// Entry returns manifest entry i.
func (r *Replica) Entry(i int) *manifest.Entry { return &r.m.Entries[i] }

// OpenLocal opens entry i's local content read-only if it is complete.
func (r *Replica) OpenLocal(i int) (*os.File, bool, error) {
	i = r.ContentIndex(i)
	if !r.Done(i) {
		return nil, false, nil
	}
	f, err := r.root.Open(dataPath(&r.m.Entries[i]))
	if err != nil {
		return nil, false, err
	}
	return f, true, nil
}

// ContentIndex maps a hard link to the entry carrying its content.
func (r *Replica) ContentIndex(i int) int { return r.tree.Leader(i) }

// Skeleton creates everything but file content: directories, symlinks,
// FIFOs and device nodes, with their metadata. It is idempotent, so it
// runs again after every restart.
func (r *Replica) Skeleton() error {
	for i := range r.m.Entries {
		e := &r.m.Entries[i]
		p := dataPath(e)
		var err error
		switch e.Type {
		case manifest.TypeDir:
			if i == 0 {
				err = r.root.Chmod(p, e.FileMode())
			} else if err = r.root.Mkdir(p, e.FileMode().Perm()); errors.Is(err, fs.ErrExist) {
				err = nil
			}
			if err == nil {
				err = r.root.Lchown(p, int(e.UID), int(e.GID))
			}
			if err == nil {
				err = r.root.Chmod(p, e.FileMode()) // after chown, which clears set-id bits
			}
			if err == nil && len(e.Xattrs) > 0 {
				err = r.dirXattrs(p, e)
			}
		case manifest.TypeSymlink:
			if err = r.root.Symlink(e.Target, p); errors.Is(err, fs.ErrExist) {
				continue
			}
			if err == nil {
				err = r.root.Lchown(p, int(e.UID), int(e.GID))
			}
			if err == nil {
				err = r.lutimes(p, e.MtimeNs)
			}
		case manifest.TypeFIFO, manifest.TypeChar, manifest.TypeBlock:
			err = r.mknod(e)
		}
		if err != nil {
			return fmt.Errorf("creating %q: %w", e.Path, err)
		}
	}
	if err := failpoint.Inject("replica.skeleton.before-relink"); err != nil {
		return err
	}
	return r.relink()
}

// relink gives complete hard-linked files the names a crash between their
// rename and their links left out.
func (r *Replica) relink() error {
	for i := range r.m.Entries {
		if len(r.tree.Links(i)) == 0 || !r.Done(i) {
			continue
		}
		if err := r.linkOthers(i); err != nil {
			return err
		}
	}
	return nil
}

func (r *Replica) dirXattrs(p string, e *manifest.Entry) error {
	d, err := r.root.Open(p)
	if err != nil {
		return err
	}
	defer d.Close()
	for k, v := range e.Xattrs {
		if err := unix.Fsetxattr(int(d.Fd()), k, v, 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("setting xattr %s: %w", k, err)
		}
	}
	return nil
}

func (r *Replica) mknod(e *manifest.Entry) error {
	p := dataPath(e)
	if _, err := r.root.Lstat(p); err == nil {
		return nil
	}
	parent, err := r.root.Open(path.Dir(p))
	if err != nil {
		return err
	}
	defer parent.Close()
	name := path.Base(p)
	if err := unix.Mknodat(int(parent.Fd()), name, e.UnixMode(), int(e.Rdev)); err != nil {
		return err
	}
	if err := unix.Fchownat(int(parent.Fd()), name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(e.MtimeNs), unix.NsecToTimespec(e.MtimeNs)}
	return unix.UtimesNanoAt(int(parent.Fd()), name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func (r *Replica) lutimes(p string, ns int64) error {
	parent, err := r.root.Open(path.Dir(p))
	if err != nil {
		return err
	}
	defer parent.Close()
	ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	return unix.UtimesNanoAt(int(parent.Fd()), path.Base(p), ts, unix.AT_SYMLINK_NOFOLLOW)
}

// Finish sets directory times, deepest first, once nothing more is added
// to them. Call it when Complete.
func (r *Replica) Finish() error {
	for i := len(r.m.Entries) - 1; i >= 0; i-- {
		e := &r.m.Entries[i]
		if e.Type != manifest.TypeDir {
			continue
		}
		t := time.Unix(0, e.MtimeNs)
		if err := r.root.Chtimes(dataPath(e), t, t); err != nil {
			return fmt.Errorf("setting times of %q: %w", e.Path, err)
		}
	}
	return nil
}

// Writer says who writes a whole file. The background copy and on-demand
// reads may write the same file at the same time, each under its own
// temporary name; whichever renames last replaces identical bytes.
type Writer byte

// Writers of whole files.
const (
	Background Writer = 'b'
	OnDemand   Writer = 'd'
)

// tmpName is where a writer writes entry i's content, in the directory it
// goes to: renaming within one directory is the cheapest commit, and the
// name is fixed so that a start sweeps what a crash left.
func tmpName(i int, w Writer) string { return ".cargo-tmp-" + strconv.Itoa(i) + "-" + string(w) }

// WriteWhole stores entry i's whole content from src, which must hold
// exactly the manifest's size, and places it (and its hard links) in the
// replica. A failure leaves nothing in data/. This is the small-file hot
// path: it works relative to a cached descriptor of the file's directory,
// so a file costs one open, its writes, three metadata calls and a rename.
func (r *Replica) WriteWhole(i int, w Writer, src io.Reader) error {
	e := &r.m.Entries[i]
	if r.Done(i) {
		_, err := io.Copy(io.Discard, src)
		return err
	}
	dir, release, err := r.dirs.Get(r.root, path.Dir(dataPath(e)))
	if err != nil {
		return fmt.Errorf("writing %q: %w", e.Path, err)
	}
	defer release()
	dfd := int(dir.Fd())
	tmp := tmpName(i, w)
	fd, err := unix.Openat(dfd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, e.Mode&0o777)
	if err != nil {
		return fmt.Errorf("writing %q: %w", e.Path, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	n, err := io.Copy(f, io.LimitReader(src, e.Size+1))
	if err == nil && n != e.Size {
		err = fmt.Errorf("the source sent %d bytes, the manifest says %d", n, e.Size)
	}
	if err == nil {
		err = setMetaCreated(f, e)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = failpoint.Inject("replica.whole.before-rename")
	}
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, path.Base(e.Path))
	}
	if err != nil {
		// What failed is the error to report; a start sweeps the
		// temporary file if this cannot.
		_ = unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("writing %q: %w", e.Path, err)
	}
	if err := r.linkOthers(i); err != nil {
		return err
	}
	if err := failpoint.Inject("replica.whole.before-done"); err != nil {
		return err
	}
	r.markDone(i, true)
	return nil
}

// commit applies metadata to a finished large file, renames it into
// place, links its other names and records it as complete. f is closed.
func (r *Replica) commit(i int, f *os.File, from string) error {
	e := &r.m.Entries[i]
	err := setMeta(f, e)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = failpoint.Inject("replica.finish.before-rename")
	}
	if err != nil {
		return err
	}
	if err := r.root.Rename(from, dataPath(e)); errors.Is(err, fs.ErrNotExist) {
		// A read can fetch a file before Skeleton made its directory;
		// Skeleton gives the directory its owner and mode when it runs.
		if err := r.root.MkdirAll(path.Dir(dataPath(e)), 0o700); err != nil {
			return err
		}
		if err := r.root.Rename(from, dataPath(e)); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := r.linkOthers(i); err != nil {
		return err
	}
	// In place but not yet done: the moment a racing reader must not get
	// wrong.
	if err := failpoint.Inject("replica.after-rename"); err != nil {
		return err
	}
	r.markDone(i, false) // its bytes were counted chunk by chunk
	return nil
}

// linkOthers gives a complete file its other hard-linked names.
func (r *Replica) linkOthers(i int) error {
	from := dataPath(&r.m.Entries[i])
	for _, j := range r.tree.Links(i) {
		if err := failpoint.Inject("replica.link.before-name"); err != nil {
			return err
		}
		to := &r.m.Entries[j]
		if err := r.root.Link(from, dataPath(to)); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("linking %q: %w", to.Path, err)
		}
	}
	return nil
}

// markDone records entry i as complete; countBytes adds its size.
func (r *Replica) markDone(i int, countBytes bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done[i] {
		r.done[i] = true
		r.files++
		if countBytes {
			r.bytes += r.m.Entries[i].Size
		}
	}
}

// umask is the process's, read once: files are created with their final
// permission bits, and only bits the umask took need an fchmod.
var umask = func() uint32 {
	m := unix.Umask(0)
	unix.Umask(m)
	return uint32(m)
}()

// setMetaCreated is setMeta for a file this process just created with
// mode e.Mode&0777 (before the umask): it skips the calls that would
// change nothing, since this process creates files as root.
func setMetaCreated(f *os.File, e *manifest.Entry) error {
	fd := int(f.Fd())
	for k, v := range e.Xattrs {
		if err := unix.Fsetxattr(fd, k, v, 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("setting xattr %s: %w", k, err)
		}
	}
	owned := e.UID != 0 || e.GID != 0 || unix.Geteuid() != 0
	if owned {
		if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
			return err
		}
	}
	// chown clears set-id bits, and the umask may have taken bits.
	if e.Mode&0o7000 != 0 || e.Mode&0o777&umask != 0 {
		if err := unix.Fchmod(fd, e.Mode&0o7777); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(e.MtimeNs), unix.NsecToTimespec(e.MtimeNs)}
	return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
}

func setMeta(f *os.File, e *manifest.Entry) error {
	fd := int(f.Fd())
	for k, v := range e.Xattrs {
		if err := unix.Fsetxattr(fd, k, v, 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("setting xattr %s: %w", k, err)
		}
	}
	if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, e.Mode&0o7777); err != nil { // after chown: it clears set-id bits
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(e.MtimeNs), unix.NsecToTimespec(e.MtimeNs)}
	return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
}

// ErrFinished is returned by Partial.ReadAt once the file is complete:
// read it from the replica instead.
var ErrFinished = errors.New("file is complete")

// Partial is a large file being filled chunk by chunk.
type Partial struct {
	r     *Replica
	index int
	size  int64
	mu    sync.Mutex
	// rw keeps reads off the file while it is committed and closed.
	rw       sync.RWMutex
	finished bool
	f        *os.File
	log      *os.File
	chunks   map[int]bool
}

func chunkCount(size int64) int { return int((size + ChunkSize - 1) / ChunkSize) }

func chunkLen(size int64, c int) int64 {
	return min(ChunkSize, size-int64(c)*ChunkSize)
}

// Partial opens large file i for filling; the same Partial is returned to
// every caller until the file is complete.
func (r *Replica) Partial(i int) (*Partial, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done[i] {
		return nil, ErrFinished // completed since the caller looked
	}
	// A Partial being finished stays here until the file is marked done:
	// making a new one then would create an empty file in its place, its
	// chunk log still saying every chunk is there.
	if p, ok := r.parts[i]; ok {
		return p, nil
	}
	e := &r.m.Entries[i]
	f, err := r.root.OpenFile(partialPath(i, ""), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(e.Size); err != nil {
		f.Close()
		return nil, err
	}
	chunks, err := readLog(r.root, i)
	if err != nil {
		f.Close()
		return nil, err
	}
	log, err := r.root.OpenFile(partialPath(i, ".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &Partial{r: r, index: i, size: e.Size, f: f, log: log, chunks: chunks}
	r.parts[i] = p
	return p, nil
}

// readLog reads a partial file's chunk log. A torn last record (a crash
// while appending) is ignored: that chunk is fetched again.
func readLog(root *os.Root, i int) (map[int]bool, error) {
	b, err := root.ReadFile(partialPath(i, ".log"))
	if errors.Is(err, fs.ErrNotExist) {
		return map[int]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	chunks := map[int]bool{}
	for off := 0; off+4 <= len(b); off += 4 {
		chunks[int(uint32(b[off])<<24|uint32(b[off+1])<<16|uint32(b[off+2])<<8|uint32(b[off+3]))] = true
	}
	return chunks, nil
}

func (p *Partial) close() {
	p.rw.Lock()
	p.finished = true
	p.f.Close()
	p.rw.Unlock()
	p.log.Close()
}

// Chunks is how many chunks the file has.
func (p *Partial) Chunks() int { return chunkCount(p.size) }

// Range returns chunk c's offset and length.
func (p *Partial) Range(c int) (off, n int64) {
	return int64(c) * ChunkSize, chunkLen(p.size, c)
}

// Has reports whether chunk c is present.
func (p *Partial) Has(c int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.chunks[c]
}

// Missing lists the chunks not yet present, in order.
func (p *Partial) Missing() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for c := 0; c < chunkCount(p.size); c++ {
		if !p.chunks[c] {
			out = append(out, c)
		}
	}
	return out
}

// WriterAt returns where chunk c's bytes go.
func (p *Partial) WriterAt() io.WriterAt { return p.f }

// ReadAt reads present bytes; the caller makes sure the chunks it reads
// are present.
func (p *Partial) ReadAt(b []byte, off int64) (int, error) {
	p.rw.RLock()
	defer p.rw.RUnlock()
	if p.finished {
		return 0, ErrFinished
	}
	return p.f.ReadAt(b, off)
}

// MarkChunk records chunk c as written, after its bytes are in the file.
// When it was the last one, the file is committed to the replica.
func (p *Partial) MarkChunk(c int) error {
	if err := failpoint.Inject("replica.chunk.before-log"); err != nil {
		return err
	}
	p.mu.Lock()
	if p.chunks[c] {
		p.mu.Unlock()
		return nil
	}
	rec := []byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}
	if _, err := p.log.Write(rec); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("journaling chunk %d of %q: %w", c, p.r.m.Entries[p.index].Path, err)
	}
	p.chunks[c] = true
	all := len(p.chunks) == chunkCount(p.size)
	p.mu.Unlock()

	p.r.mu.Lock()
	p.r.bytes += chunkLen(p.size, c)
	p.r.mu.Unlock()
	if all {
		return p.finish()
	}
	return nil
}

func (p *Partial) finish() error {
	r := p.r
	if err := failpoint.Inject("replica.finish.before-commit"); err != nil {
		return err
	}
	p.log.Close()
	// Readers of the partial wait for the commit, then find it finished
	// and the file done.
	p.rw.Lock()
	p.finished = true
	err := r.commit(p.index, p.f, partialPath(p.index, ""))
	p.rw.Unlock()
	r.mu.Lock()
	delete(r.parts, p.index)
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("completing %q: %w", r.m.Entries[p.index].Path, err)
	}
	if err := failpoint.Inject("replica.finish.before-log-remove"); err != nil {
		return err
	}
	return r.root.Remove(partialPath(p.index, ".log"))
}
