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
// complete), and must not be mounted now.
//
// Every step is a rename or a removal that a repeated run redoes or skips,
// so a crash part-way is mended by running Settle again. When it returns,
// upper is empty and work is gone.
func Settle(data, upper, work string) error {
	// The merged view's root took its attributes from the upper root. Read
	// them before merging, which changes the upper root's times.
	var st unix.Stat_t
	if err := unix.Lstat(upper, &st); err != nil {
		return fmt.Errorf("settling: %w", err)
	}
	if err := mergeDir(data, upper); err != nil {
		return err
	}
	if err := setDirMeta(data, &st); err != nil {
		return err
	}
	if err := failpoint.Inject("replica.settle.before-work-remove"); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("removing overlay work directory: %w", err)
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
		if err := mergeDir(d, u); err != nil {
			return err
		}
		if err := setDirMeta(d, &st); err != nil {
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
// impure, opaque, ...), which would mislead a later overlay.
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
		if strings.HasPrefix(name, "trusted.overlay.") {
			if err := unix.Lremovexattr(p, name); err != nil && !errors.Is(err, unix.ENODATA) {
				return fmt.Errorf("removing %s from %s: %w", name, p, err)
			}
		}
	}
	return nil
}

// setDirMeta gives directory d the owner, mode and times the container
// saw through the overlay (st, its upper directory's, read before merging).
func setDirMeta(d string, st *unix.Stat_t) error {
	if err := os.Lchown(d, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Chmod(d, st.Mode&0o7777); err != nil {
		return err
	}
	if err := stripOverlayXattrs(d); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, d, ts, unix.AT_SYMLINK_NOFOLLOW)
}
