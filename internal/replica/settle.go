package replica

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/failpoint"
)

// Settle merges an overlay's upper layer into the replica it was mounted
// over, so that the replica alone holds what the container saw: files
// written or copied up replace the replica's, whiteouts delete, opaque
// directories replace the replica's directory whole. The overlay must be
// mounted with redirect_dir=off and metacopy=off (every upper entry is
// complete), and must not be mounted now. Writers' temporary files a crash
// left in the replica are removed first: they are not the volume's.
//
// Every step is a rename or a removal that a repeated run redoes or skips,
// so a crash part-way is mended by running Settle again. The attributes
// the container saw on a directory that is merged rather than moved are
// those of its upper directory before the merge changed its times; the
// first run records them on it (an xattr) and a repeated run reads them
// back. When it returns, upper is empty, work is gone and the merge is on
// disk.
func Settle(data, upper, work string) error {
	// The merged view's root took its attributes from the upper root.
	root, ok, err := loadAttrs(upper)
	if err != nil {
		return fmt.Errorf("settling: %w", err)
	}
	if !ok {
		// The first run: nothing is merged yet, so whatever has a
		// temporary file's name in data is the replica's.
		if err := sweepTemps(data); err != nil {
			return err
		}
		if root, err = recordAttrs(upper); err != nil {
			return fmt.Errorf("settling: %w", err)
		}
	}
	if err := mergeDir(data, upper); err != nil {
		return err
	}
	if err := setDirMeta(data, root); err != nil {
		return err
	}
	if err := failpoint.Inject("replica.settle.before-work-remove"); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("removing overlay work directory: %w", err)
	}
	return syncfs(data)
}

// sweepTemps removes writers' temporary files from the replica tree.
func sweepTemps(data string) error {
	return filepath.WalkDir(data, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.Type().IsRegular() && isTmpName(de.Name()) {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing a temporary file: %w", err)
			}
		}
		return nil
	})
}

func syncfs(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("flushing %s to disk: %w", dir, err)
	}
	return nil
}

func mergeDir(data, upper string) error {
	entries, err := os.ReadDir(upper)
	if err != nil {
		return fmt.Errorf("reading %s: %w", upper, err)
	}
	for _, ent := range entries {
		u := filepath.Join(upper, ent.Name())
		d := filepath.Join(data, ent.Name())
		if err := mergeEntry(d, u); err != nil {
			return err
		}
	}
	return nil
}

func mergeEntry(d, u string) error {
	if err := failpoint.Inject("replica.settle.before-entry"); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(u, &st); err != nil {
		return fmt.Errorf("settling %s: %w", u, err)
	}
	if isWhiteout(&st) {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("applying deletion of %s: %w", d, err)
		}
		return os.Remove(u)
	}
	dst, derr := os.Lstat(d)
	exists := derr == nil
	if derr != nil && !errors.Is(derr, fs.ErrNotExist) {
		return derr
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if exists && (!dst.IsDir() || opaque(u)) {
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("replacing %s: %w", d, err)
			}
			exists = false
		}
		if !exists {
			if err := os.Rename(u, d); err != nil {
				return fmt.Errorf("moving %s into place: %w", d, err)
			}
			return cleanTree(d)
		}
		a, ok, err := loadAttrs(u)
		if err == nil && !ok {
			a, err = recordAttrs(u)
		}
		if err != nil {
			return fmt.Errorf("settling %s: %w", u, err)
		}
		if err := mergeDir(d, u); err != nil {
			return err
		}
		if err := setDirMeta(d, a); err != nil {
			return err
		}
		return os.Remove(u)
	}
	if exists && dst.IsDir() {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("replacing %s: %w", d, err)
		}
	}
	if err := os.Rename(u, d); err != nil {
		return fmt.Errorf("moving %s into place: %w", d, err)
	}
	return stripOverlayXattrs(d)
}

// isWhiteout recognises overlayfs's deletion marker, a 0/0 character
// device.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func opaque(dir string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(dir, "trusted.overlay.opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// cleanTree removes overlay markers from a subtree moved whole into the
// replica: whiteouts have nothing below them to hide there.
func cleanTree(root string) error {
	return filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.Type()&fs.ModeCharDevice != 0 {
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err == nil && isWhiteout(&st) {
				return os.Remove(p)
			}
		}
		return stripOverlayXattrs(p)
	})
}

// stripOverlayXattrs removes overlayfs's private attributes (origin,
// impure, opaque, ...), which would mislead a later overlay, and Settle's
// own.
func stripOverlayXattrs(p string) error {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil // no xattrs, or not supported
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if strings.HasPrefix(name, "trusted.overlay.") || name == settleXattr {
			if err := unix.Lremovexattr(p, name); err != nil && !errors.Is(err, unix.ENODATA) {
				return fmt.Errorf("removing %s from %s: %w", name, p, err)
			}
		}
	}
	return nil
}

// settleXattr holds, on an upper directory being merged, the attributes
// it had before: "uid gid mode atime-s atime-ns mtime-s mtime-ns".
const settleXattr = "trusted.cargo.settle"

// dirAttrs are what setDirMeta gives a directory.
type dirAttrs struct {
	uid, gid, mode uint32
	atime, mtime   unix.Timespec
}

// loadAttrs reads the attributes recorded on upper directory u; ok is
// false when none are.
func loadAttrs(u string) (a dirAttrs, ok bool, err error) {
	buf := make([]byte, 128)
	n, err := unix.Lgetxattr(u, settleXattr, buf)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return a, false, nil
	}
	if err != nil {
		return a, false, err
	}
	var as, ans, ms, mns int64
	if _, err := fmt.Sscanf(string(buf[:n]), "%d %d %d %d %d %d %d", &a.uid, &a.gid, &a.mode, &as, &ans, &ms, &mns); err != nil {
		return a, false, nil // torn: u is unchanged still, record it anew
	}
	a.atime, a.mtime = unix.Timespec{Sec: as, Nsec: ans}, unix.Timespec{Sec: ms, Nsec: mns}
	return a, true, nil
}

// recordAttrs reads upper directory u's attributes and records them on it
// before anything of it is merged. Where xattrs are not supported they are
// only read, as a repeated run will read them.
func recordAttrs(u string) (dirAttrs, error) {
	var st unix.Stat_t
	if err := unix.Lstat(u, &st); err != nil {
		return dirAttrs{}, err
	}
	a := dirAttrs{uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777, atime: st.Atim, mtime: st.Mtim}
	v := fmt.Sprintf("%d %d %d %d %d %d %d", a.uid, a.gid, a.mode, a.atime.Sec, a.atime.Nsec, a.mtime.Sec, a.mtime.Nsec)
	if err := unix.Lsetxattr(u, settleXattr, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
		return dirAttrs{}, err
	}
	return a, nil
}

// setDirMeta gives directory d the owner, mode and times the container
// saw through the overlay: a, its upper directory's before merging.
func setDirMeta(d string, a dirAttrs) error {
	if err := os.Lchown(d, int(a.uid), int(a.gid)); err != nil {
		return err
	}
	if err := unix.Chmod(d, a.mode); err != nil {
		return err
	}
	if err := stripOverlayXattrs(d); err != nil {
		return err
	}
	ts := []unix.Timespec{a.atime, a.mtime}
	return unix.UtimesNanoAt(unix.AT_FDCWD, d, ts, unix.AT_SYMLINK_NOFOLLOW)
}
