// Package replica keeps the local copy of a federated volume while it is
// filled from the source host, and turns it into a plain local volume once
// complete.
//
// Layout under the volume's directory:
//
//	data/               the replica: the source tree as far as copied
//	partial/<index>     a large file being filled chunk by chunk
//	partial/<index>.log the chunks on disk in it, appended as they land
//	data/DIR/.cargo-tmp-<index>-<b|d>  a small file being written whole
//
// The replica is its own journal. A regular file is complete exactly when
// it stands at its path in data/ with the manifest's size and every name
// of its hard-link group shares its inode: it is renamed there only after
// its content and metadata are written. A file whose chunks are all
// journaled is committed by whoever finds it so: the last MarkChunk, the
// next Partial, or Open. Progress is rebuilt from disk on start and counts
// only what is there.
//
// What a power cut leaves:
//
//   - A large file's chunk is journaled only after an fdatasync of the
//     partial file (one sync covers every chunk written before it), and
//     each record carries a checksum: a torn record, or zeros where the
//     log had grown, ends the log there. So a journaled chunk is on disk.
//   - A large file is fsynced, with its metadata, before its rename into
//     data/, and data/'s directory is fsynced before its log is removed:
//     a large file at its path and size is whole.
//   - A small file is not synced: it is renamed into place after its
//     writes. ext4 and XFS, where Docker's data usually lives, put a new
//     file's size on disk only with its data, so a file the cut caught is
//     shorter than the manifest says, or absent, and is fetched again; a
//     filesystem without that order could keep such a file as zeros.
//   - Verify ends with a syncfs: once it returned, everything it proved is
//     on disk. The source must be told the copy is complete only then.
package replica

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/cargo-migrate/cargo/internal/dircache"
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

// state is how far a content-bearing entry is.
type state uint8

const (
	missing state = iota
	// placed: the content is at the entry's path in data/, readable; some
	// other name of its hard-link group may still be missing.
	placed
	// done: every name of the file is in place.
	done
)

// lockStripes bounds the commit locks: entries share them by index.
const lockStripes = 64

// Replica is one federated volume's local copy.
type Replica struct {
	root *os.Root // the volume's directory
	m    *manifest.Manifest
	tree *manifest.Tree // m's index: hard-link groups, names by directory

	totalFiles int
	totalBytes int64
	// tmpClash: some manifest name looks like a temporary file's, so
	// tmpName must step around it.
	tmpClash bool

	dirs dircache.Cache // Create: a read may come before Skeleton

	// commits serialises the steps that put an entry in place (rename,
	// links, state), so two writers of one file cannot both land it.
	commits [lockStripes]sync.Mutex

	mu        sync.Mutex
	state     []state          // per entry
	parts     map[int]*Partial // open partial large files
	journaled map[int]int64    // bytes of journaled chunks of large files not placed
	files     int              // content-bearing files done
	bytes     int64            // their bytes and placed ones', plus journaled chunks
}

// Open opens the replica in dir (created if needed) for manifest m and
// rebuilds its progress from what is on disk: it removes temporary files a
// crash left, commits large files whose chunks are all journaled and mends
// missing hard-link names. m is trusted once it has passed
// manifest.Validate (Decode's result has); any other is validated first.
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
	r := &Replica{root: root, m: m, tree: tree, state: make([]state, len(m.Entries)),
		parts: map[int]*Partial{}, journaled: map[int]int64{}}
	r.dirs.Create = true
	r.totalFiles, r.totalBytes = m.Totals()
	for i := 1; i < len(m.Entries) && !r.tmpClash; i++ {
		r.tmpClash = strings.HasPrefix(tree.Name(i), tmpPrefix)
	}
	if err := r.scan(); err != nil {
		r.dirs.Close()
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

// Totals is what the whole copy moves.
func (r *Replica) Totals() (files int, bytes int64) { return r.totalFiles, r.totalBytes }

// Progress is what has been copied so far: the files whose every name is
// in place, and the bytes of files in place plus the journaled chunks of
// large files still filling. Both follow the entries' states, which only
// what is on disk changes.
func (r *Replica) Progress() (files int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.files, r.bytes
}

// Complete reports whether every file is in place under all its names, as
// far as this process knows; Verify proves it from disk.
func (r *Replica) Complete() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.files == r.totalFiles && len(r.parts) == 0
}

// Done reports whether entry i is complete locally under all its names.
func (r *Replica) Done(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[i] == done
}

func (r *Replica) stateOf(i int) state {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[i]
}

// setState moves content entry i to s and keeps the counts in step.
func (r *Replica) setState(i int, s state) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setStateLocked(i, s)
}

func (r *Replica) setStateLocked(i int, s state) {
	old := r.state[i]
	if old == s {
		return
	}
	size := r.m.Entries[i].Size
	switch {
	case old == missing:
		r.bytes += size - r.journaled[i]
		delete(r.journaled, i)
	case s == missing:
		r.bytes -= size
	}
	if old == done {
		r.files--
	}
	if s == done {
		r.files++
	}
	r.state[i] = s
}

// addJournaled counts n more journaled bytes of large file i.
func (r *Replica) addJournaled(i int, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state[i] == missing {
		r.journaled[i] += n
		r.bytes += n
	}
}

// lockEntry takes the commit lock of entry i.
func (r *Replica) lockEntry(i int) func() {
	mu := &r.commits[i%lockStripes]
	mu.Lock()
	return mu.Unlock
}

// Entry returns manifest entry i.
func (r *Replica) Entry(i int) *manifest.Entry { return &r.m.Entries[i] }

// OpenLocal opens entry i's local content read-only if it is in place.
func (r *Replica) OpenLocal(i int) (*os.File, bool, error) {
	i = r.ContentIndex(i)
	if r.stateOf(i) == missing {
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
