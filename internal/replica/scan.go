package replica

import (
	"errors"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// scan rebuilds the entries' states from disk at Open. It removes what a
// crash left (writers' temporary files, partial files of files in place),
// mends missing hard-link names, and commits large files whose chunks are
// all journaled. A mend or commit that fails here is left to the next
// write, Partial or Skeleton of the file, which retries it and reports.
func (r *Replica) scan() error {
	fresh, err := r.emptyDir(dataDir)
	if err != nil {
		return err
	}
	noParts, err := r.emptyDir(partialDir)
	if err != nil {
		return err
	}
	if fresh && noParts {
		return nil // a new replica: spare a look-up per file
	}
	if !fresh {
		if err := r.sweepTemps(); err != nil {
			return err
		}
	}
	var inPlace []bool
	if !fresh {
		if inPlace, err = r.inPlace(); err != nil {
			return err
		}
	}
	for i := range r.m.Entries {
		e := &r.m.Entries[i]
		if !HasContent(e) {
			continue
		}
		if inPlace != nil && inPlace[i] {
			r.setState(i, placed)
			_ = r.mend(i) // else Skeleton's relink or the next write retries
			continue
		}
		if e.Size < LargeFile || noParts {
			continue
		}
		n := chunkCount(e.Size)
		chunks, _, err := readLog(r.root, i, n)
		if err != nil {
			return err
		}
		if len(chunks) == n {
			// Killed between the last record and the commit, or the
			// commit failed: commit it now. A failure is the next
			// Partial's to retry and report.
			_, _ = r.Partial(i)
			continue
		}
		r.setJournaled(i, chunkBytes(e.Size, chunks))
	}
	if noParts {
		return nil
	}
	return r.sweepPartials()
}

// inPlace tells, for each entry with content of its own, whether a
// regular file of its size stands at its path in data/. It opens each
// directory once and stats its files from there: an Lstat through the
// os.Root per file opened every directory of the path again, five
// syscalls a file, and at a million files took 7 of the 13 s a restarted
// target needed before its copy resumed.
func (r *Replica) inPlace() ([]bool, error) {
	in := make([]bool, len(r.m.Entries))
	var st unix.Stat_t
	for d := range r.m.Entries {
		if r.m.Entries[d].Type != manifest.TypeDir {
			continue
		}
		kids := r.tree.Children(d)
		if !slices.ContainsFunc(kids, func(i int) bool { return HasContent(&r.m.Entries[i]) }) {
			continue
		}
		dir, err := r.root.Open(dataPath(&r.m.Entries[d]))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue // nothing in it is in place
		}
		if err != nil {
			return nil, err
		}
		fd := int(dir.Fd())
		for _, i := range kids {
			e := &r.m.Entries[i]
			if !HasContent(e) {
				continue
			}
			err := ignoringEINTR(func() error { return unix.Fstatat(fd, r.tree.Name(i), &st, unix.AT_SYMLINK_NOFOLLOW) })
			in[i] = err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == e.Size
		}
		dir.Close()
	}
	return in, nil
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func (r *Replica) emptyDir(p string) (bool, error) {
	d, err := r.root.Open(p)
	if err != nil {
		return false, err
	}
	defer d.Close()
	names, _ := d.Readdirnames(1)
	return len(names) == 0, nil
}

// sweepTemps removes every writer's temporary file from data/: names of
// their exact form that the manifest does not hold. A crash can leave one
// beside a complete file (two writers, one rename, then the crash), so
// every directory is looked at, not only those of missing files.
func (r *Replica) sweepTemps() error {
	for d := range r.m.Entries {
		e := &r.m.Entries[d]
		if e.Type != manifest.TypeDir {
			continue
		}
		dir, err := r.root.Open(dataPath(e))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		names, err := dir.Readdirnames(-1)
		dir.Close()
		if err != nil {
			return err
		}
		for _, name := range names {
			if !isTmpName(name) {
				continue
			}
			if _, ok := r.tree.Lookup(d, name); ok {
				continue
			}
			if err := r.root.Remove(path.Join(dataPath(e), name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// sweepPartials removes from partial/ everything but the partial files
// and logs of large files not in place: logs of files committed before a
// crash removed them, rewrites of logs a crash interrupted.
func (r *Replica) sweepPartials() error {
	d, err := r.root.Open(partialDir)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		if r.partialInUse(name) {
			continue
		}
		if err := r.root.Remove(path.Join(partialDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// partialInUse tells whether name in partial/ belongs to a large file not
// in place.
func (r *Replica) partialInUse(name string) bool {
	i, err := strconv.Atoi(strings.TrimSuffix(name, ".log"))
	if err != nil || i < 0 || i >= len(r.m.Entries) || strconv.Itoa(i) != strings.TrimSuffix(name, ".log") {
		return false
	}
	e := &r.m.Entries[i]
	return HasContent(e) && e.Size >= LargeFile && r.stateOf(i) == missing
}
