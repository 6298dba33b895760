package replica

import (
	"errors"
	"io/fs"
	"path"
	"strconv"
	"strings"

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
	for i := range r.m.Entries {
		e := &r.m.Entries[i]
		if !HasContent(e) {
			continue
		}
		if !fresh {
			if fi, err := r.root.Lstat(dataPath(e)); err == nil && fi.Mode().IsRegular() && fi.Size() == e.Size {
				r.setState(i, placed)
				_ = r.mend(i) // else Skeleton's relink or the next write retries
				continue
			}
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
