package replica

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/manifest"
)

// commitLarge puts large file i, complete in the partial file f (at
// from), in place: metadata, fsync, rename into data/, fsync of the
// directory, links, then the log's removal. Called with i's commit lock
// held; f is closed.
//
// The fsync before the rename is what lets a file at its path and size
// count as complete after a power cut: the partial file had its full size
// from the start, so only the sync proves its bytes. The directory's fsync
// makes the rename durable before the log that could redo it is removed.
func (r *Replica) commitLarge(i int, f *os.File, from string) error {
	e := &r.m.Entries[i]
	err := setMeta(f, e)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = failpoint.Inject("replica.finish.before-rename")
	}
	if err != nil {
		return err
	}
	if err := r.rename(from, dataPath(e)); err != nil {
		return err
	}
	if err := r.syncDir(path.Dir(dataPath(e))); err != nil {
		return err
	}
	r.setState(i, placed)
	if err := r.linkOthers(i); err != nil {
		return err
	}
	// In place but not yet done: the moment a racing reader must not get
	// wrong.
	if err := failpoint.Inject("replica.after-rename"); err != nil {
		return err
	}
	r.setState(i, done)
	return r.removeLog(i)
}

// rename moves from to to within the root. A read can fetch a file before
// Skeleton made its directory; Skeleton gives the directory its owner and
// mode when it runs.
func (r *Replica) rename(from, to string) error {
	err := r.root.Rename(from, to)
	if errors.Is(err, fs.ErrNotExist) {
		if err := r.root.MkdirAll(path.Dir(to), 0o700); err != nil {
			return err
		}
		err = r.root.Rename(from, to)
	}
	return err
}

func (r *Replica) removeLog(i int) error {
	if err := failpoint.Inject("replica.finish.before-log-remove"); err != nil {
		return err
	}
	if err := r.root.Remove(partialPath(i, ".log")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (r *Replica) syncDir(p string) error {
	d, err := r.root.Open(p)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// mend links the missing names of a file in place and marks it done.
func (r *Replica) mend(i int) error {
	defer r.lockEntry(i)()
	return r.mendLocked(i)
}

// mendLocked is mend with i's commit lock held.
func (r *Replica) mendLocked(i int) error {
	if r.stateOf(i) != placed {
		return nil
	}
	if err := r.linkOthers(i); err != nil {
		return err
	}
	r.setState(i, done)
	return nil
}

// linkOthers gives a file in place its other hard-linked names. A name
// that holds another inode (hard links split by an older version) is
// replaced: every name of a group is the leader's inode.
func (r *Replica) linkOthers(i int) error {
	from := dataPath(&r.m.Entries[i])
	var lead os.FileInfo
	for _, j := range r.tree.Links(i) {
		if err := failpoint.Inject("replica.link.before-name"); err != nil {
			return err
		}
		to := dataPath(&r.m.Entries[j])
		err := r.root.Link(from, to)
		if errors.Is(err, fs.ErrNotExist) {
			if err = r.root.MkdirAll(path.Dir(to), 0o700); err == nil {
				err = r.root.Link(from, to)
			}
		}
		if errors.Is(err, fs.ErrExist) {
			if lead == nil {
				if lead, err = r.root.Lstat(from); err != nil {
					return fmt.Errorf("linking %q: %w", r.m.Entries[j].Path, err)
				}
			}
			if fi, serr := r.root.Lstat(to); serr == nil && os.SameFile(lead, fi) {
				continue
			}
			if err = r.root.Remove(to); err == nil {
				err = r.root.Link(from, to)
			}
		}
		if err != nil {
			return fmt.Errorf("linking %q: %w", r.m.Entries[j].Path, err)
		}
	}
	return nil
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
