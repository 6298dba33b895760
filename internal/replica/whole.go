package replica

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/manifest"
)

// Writer says who writes a whole file. The background copy and on-demand
// reads may write the same file at the same time, each under its own
// temporary name; the first to finish puts it in place, the other drops
// its copy.
type Writer byte

// Writers of whole files.
const (
	Background Writer = 'b'
	OnDemand   Writer = 'd'
)

const tmpPrefix = ".cargo-tmp-"

// tmpName is where writer w writes entry i's content, in the directory it
// goes to: renaming within one directory is the cheapest commit, and the
// name is fixed so that a start sweeps what a crash left. It is
// ".cargo-tmp-INDEX-W"; should the manifest hold that very name in that
// directory, the index gets leading zeros until it names nothing the
// manifest holds.
func (r *Replica) tmpName(i int, w Writer) string {
	name := tmpPrefix + strconv.Itoa(i) + "-" + string(w)
	if !r.tmpClash {
		return name
	}
	parent := r.tree.Parent(i)
	for k := len(tmpPrefix); ; {
		if _, ok := r.tree.Lookup(parent, name); !ok {
			return name
		}
		name = name[:k] + "0" + name[k:]
	}
}

// isTmpName tells whether name has the form of a writer's temporary file:
// ".cargo-tmp-", decimal digits, "-", then "b" or "d".
func isTmpName(name string) bool {
	rest, ok := strings.CutPrefix(name, tmpPrefix)
	n := len(rest)
	if !ok || n < 3 || rest[n-2] != '-' || (rest[n-1] != byte(Background) && rest[n-1] != byte(OnDemand)) {
		return false
	}
	for _, c := range []byte(rest[:n-2]) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// WriteWhole stores entry i's whole content from src, which must hold
// exactly the manifest's size, and places it (and its hard links) in the
// replica. A failure leaves nothing in data/. This is the small-file hot
// path: it works relative to a cached descriptor of the file's directory,
// so a file costs one open, its writes, three metadata calls and a rename.
//
// Of two writers of one file, the first to reach the rename puts its copy
// in place; the other removes its own, so the names of a hard-linked file
// stay one inode.
func (r *Replica) WriteWhole(i int, w Writer, src io.Reader) error {
	e := &r.m.Entries[i]
	if s := r.stateOf(i); s != missing {
		if _, err := io.Copy(io.Discard, src); err != nil {
			return err
		}
		if s == placed {
			return r.mend(i)
		}
		return nil
	}
	dir, release, err := r.dirs.Get(r.root, path.Dir(dataPath(e)))
	if err != nil {
		return fmt.Errorf("writing %q: %w", e.Path, err)
	}
	defer release()
	dfd := int(dir.Fd())
	tmp := r.tmpName(i, w)
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
	if err != nil {
		// What failed is the error to report; a start sweeps the
		// temporary file if this cannot.
		_ = unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("writing %q: %w", e.Path, err)
	}
	return r.placeWhole(i, dfd, tmp)
}

// placeWhole renames a written temporary file into place, unless another
// writer was first.
func (r *Replica) placeWhole(i, dfd int, tmp string) error {
	e := &r.m.Entries[i]
	defer r.lockEntry(i)()
	if s := r.stateOf(i); s != missing {
		_ = unix.Unlinkat(dfd, tmp, 0) // a start sweeps it if this cannot
		if s == placed {
			return r.linkAndDone(i)
		}
		return nil
	}
	if err := unix.Renameat(dfd, tmp, dfd, path.Base(e.Path)); err != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("writing %q: %w", e.Path, err)
	}
	r.setState(i, placed)
	return r.linkAndDone(i)
}

// linkAndDone is mend with the commit lock held.
func (r *Replica) linkAndDone(i int) error {
	if err := r.linkOthers(i); err != nil {
		return err
	}
	if err := failpoint.Inject("replica.whole.before-done"); err != nil {
		return err
	}
	r.setState(i, done)
	return nil
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
