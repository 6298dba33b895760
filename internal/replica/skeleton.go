package replica

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/manifest"
)

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

// relink gives files in place the names a crash or a failure between
// their rename and their links left out.
func (r *Replica) relink() error {
	for i := range r.m.Entries {
		if r.stateOf(i) != placed {
			continue
		}
		if err := r.mend(i); err != nil {
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
