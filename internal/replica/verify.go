package replica

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// ErrIncomplete is what Verify's error matches when the copy is not
// complete on disk.
var ErrIncomplete = errors.New("the copy is not complete")

// IncompleteError names the first entry Verify found not in place.
type IncompleteError struct {
	Path   string // the entry's path in the volume
	Reason string
	// More is how many other entries were found not in place.
	More int
}

func (e *IncompleteError) Error() string {
	if e.More > 0 {
		return fmt.Sprintf("%v: %q %s, and %d more entries are not in place", ErrIncomplete, e.Path, e.Reason, e.More)
	}
	return fmt.Sprintf("%v: %q %s", ErrIncomplete, e.Path, e.Reason)
}

// Is makes the error match ErrIncomplete.
func (e *IncompleteError) Is(target error) bool { return target == ErrIncomplete }

// Verify proves the copy complete from disk: every manifest entry stands
// at its path in data/ with the manifest's type, a regular file with the
// manifest's size and one link per name of its hard-link group, every
// later name of a group the first name's inode, and no partial file is
// left. It then flushes the replica's filesystem, so that what it proved
// survives a power cut. Call it before telling the source the copy is
// complete; an error naming an entry (matching ErrIncomplete) means that
// entry is to be copied again: a file counted done but not found is
// counted missing again, so the copy fetches it anew. Verify checks every
// entry, so that one more round of copying mends all it found.
func (r *Replica) Verify() error {
	var first *IncompleteError
	for i := range r.m.Entries {
		err := r.verifyEntry(i)
		var inc *IncompleteError
		switch {
		case err == nil:
		case !errors.As(err, &inc):
			return err
		case first == nil:
			first = inc
		default:
			first.More++
		}
	}
	if first != nil {
		return first
	}
	d, err := r.root.Open(partialDir)
	if err != nil {
		return err
	}
	names, _ := d.Readdirnames(1)
	if len(names) > 0 {
		d.Close()
		return &IncompleteError{Path: partialDir + "/" + names[0], Reason: "is a partial file left"}
	}
	err = unix.Syncfs(int(d.Fd()))
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("flushing the replica to disk: %w", err)
	}
	return nil
}

func (r *Replica) verifyEntry(i int) error {
	e := &r.m.Entries[i]
	bad := func(format string, args ...any) error {
		return &IncompleteError{Path: e.Path, Reason: fmt.Sprintf(format, args...)}
	}
	fi, err := r.root.Lstat(dataPath(e))
	if errors.Is(err, fs.ErrNotExist) {
		r.demote(i, r.lost(i))
		return bad("is missing")
	}
	if err != nil {
		return fmt.Errorf("checking %q: %w", e.Path, err)
	}
	if got := fi.Mode().Type(); got != modeType(e.Type) {
		r.demote(i, r.lost(i))
		return bad("is a %v, the source's is a %v", got, e.Type)
	}
	switch e.Type {
	case manifest.TypeSymlink:
		if target, err := r.root.Readlink(dataPath(e)); err != nil || target != e.Target {
			return bad("points to %q, the source's to %q", target, e.Target)
		}
	case manifest.TypeFile:
		if fi.Size() != e.Size {
			r.demote(i, r.lost(i))
			return bad("has %d bytes, the source's %d", fi.Size(), e.Size)
		}
		lead := r.ContentIndex(i)
		if lead != i {
			lfi, err := r.root.Lstat(dataPath(&r.m.Entries[lead]))
			if err != nil || !os.SameFile(lfi, fi) {
				r.demote(lead, placed)
				return bad("is not a hard link of %q", r.m.Entries[lead].Path)
			}
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Nlink) != 1+len(r.tree.Links(i)) {
			r.demote(i, placed)
			return bad("has %d links, the source's %d", st.Nlink, 1+len(r.tree.Links(i)))
		}
		if r.stateOf(i) != done {
			return bad("is not copied yet")
		}
	}
	return nil
}

// demote counts content entry i (or its group's) as no further than s.
func (r *Replica) demote(i int, s state) {
	i = r.ContentIndex(i)
	if !HasContent(&r.m.Entries[i]) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state[i] > s && r.parts[i] == nil {
		r.setStateLocked(i, s)
	}
}

// lost is how far a file is whose name i is gone: missing if i carries
// its content, else in place with a name to mend.
func (r *Replica) lost(i int) state {
	if r.ContentIndex(i) == i {
		return missing
	}
	return placed
}

// modeType is the fs.FileMode type bits of a manifest type.
func modeType(t manifest.Type) fs.FileMode {
	switch t {
	case manifest.TypeDir:
		return fs.ModeDir
	case manifest.TypeSymlink:
		return fs.ModeSymlink
	case manifest.TypeFIFO:
		return fs.ModeNamedPipe
	case manifest.TypeChar:
		return fs.ModeDevice | fs.ModeCharDevice
	case manifest.TypeBlock:
		return fs.ModeDevice
	}
	return 0
}
