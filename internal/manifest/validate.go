package manifest

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every error that says a manifest (or its
// encoding) is malformed, as opposed to an I/O failure.
var ErrInvalid = errors.New("invalid manifest")

// EntryError says what is wrong with one entry. It matches ErrInvalid.
type EntryError struct {
	Index  int
	Path   string
	Reason string
}

func (e *EntryError) Error() string {
	// The path is hostile input: keep the message readable and bounded.
	p := e.Path
	if len(p) > 200 {
		p = p[:200] + "..."
	}
	return fmt.Sprintf("manifest entry %d %q: %s", e.Index, p, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *EntryError) Is(target error) bool { return target == ErrInvalid }

func entryErr(i int, e *Entry, format string, args ...any) error {
	return &EntryError{Index: i, Path: e.Path, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks the manifest as hostile input: every rule a consumer
// relies on to build a tree under a target directory without escaping it,
// colliding, or misreading hard links. It returns the first problem found.
// On success it keeps the manifest's Tree, built while checking; on
// failure the manifest has none.
//
// Validate applies every limit but MaxBytes and MaxLineBytes, which are of
// the encoding.
func (m *Manifest) Validate(limits Limits) error {
	return m.validate(limits.withDefaults(), true)
}

// validate is Validate with l's defaults already filled in; totals says
// whether to check the totals too, which Decode did as entries arrived.
func (m *Manifest) validate(l Limits, totals bool) error {
	m.tree = nil
	n := len(m.Entries)
	if n == 0 {
		return fmt.Errorf("%w: no entries (the root is required)", ErrInvalid)
	}
	if n > l.MaxEntries {
		return &LimitError{Limit: "MaxEntries", What: fmt.Sprintf("the manifest's %d entries", n), Max: int64(l.MaxEntries)}
	}
	b := budget{l: &l}
	for i := range m.Entries {
		e := &m.Entries[i]
		if err := checkEntry(i, e, l); err != nil {
			return err
		}
		if totals {
			if err := b.add(e); err != nil {
				return err
			}
		}
		if e.LinkTo == NoLink {
			continue
		}
		// checkEntry made sure LinkTo is an earlier index.
		f := &m.Entries[e.LinkTo]
		if f.Type != TypeFile || f.LinkTo != NoLink {
			return entryErr(i, e, "links to entry %d, which is not the first of a hard-link group of files", e.LinkTo)
		}
		if e.Size != f.Size {
			return entryErr(i, e, "size %d differs from its hard-link target entry %d (size %d)", e.Size, e.LinkTo, f.Size)
		}
	}
	t, err := buildTree(m)
	if err != nil {
		return err
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		// Only files are in groups: anything else is its own leader, alone.
		if want := uint32(1 + len(t.Links(t.Leader(i)))); e.Nlink != want {
			return entryErr(i, e, "nlink is %d, but %d entries of the manifest share the inode", e.Nlink, want)
		}
	}
	m.tree = t
	return nil
}

// checkEntry applies the rules that need no other entry, and the range of
// LinkTo. Decode uses it on each entry as it arrives so that a hostile
// stream is refused before it has cost much memory.
func checkEntry(i int, e *Entry, l Limits) error {
	if e.Index != i {
		return entryErr(i, e, "index field is %d", e.Index)
	}
	if i == 0 {
		if e.Path != "." {
			return entryErr(i, e, `the root entry's path must be "."`)
		}
		if e.Type != TypeDir {
			return entryErr(i, e, "the root entry must be a dir, not %s", e.Type)
		}
	} else if reason := checkPath(e.Path, l.MaxPathLen); reason != "" {
		return entryErr(i, e, "%s", reason)
	}
	if e.Type < TypeDir || e.Type > TypeBlock {
		return entryErr(i, e, "unknown type %d", uint8(e.Type))
	}
	if e.Mode&^07777 != 0 {
		return entryErr(i, e, "mode %#o has bits outside 07777", e.Mode)
	}
	if e.Size < 0 {
		return entryErr(i, e, "negative size %d", e.Size)
	}
	if e.Size != 0 && e.Type != TypeFile {
		return entryErr(i, e, "a %s has size %d", e.Type, e.Size)
	}
	if e.Type == TypeSymlink {
		switch {
		case e.Target == "":
			return entryErr(i, e, "symlink has an empty target")
		case len(e.Target) > MaxTargetLen:
			return entryErr(i, e, "symlink target is %d bytes, over %d", len(e.Target), MaxTargetLen)
		case strings.IndexByte(e.Target, 0) >= 0:
			return entryErr(i, e, "symlink target contains a NUL byte")
		}
	} else if e.Target != "" {
		return entryErr(i, e, "a %s has a symlink target", e.Type)
	}
	if e.Rdev != 0 && e.Type != TypeChar && e.Type != TypeBlock {
		return entryErr(i, e, "a %s has a device number", e.Type)
	}
	if e.LinkTo != NoLink {
		if e.LinkTo < 0 || e.LinkTo >= i {
			return entryErr(i, e, "hard-link target %d is not an earlier entry", e.LinkTo)
		}
		if e.Type != TypeFile {
			return entryErr(i, e, "a %s is a hard-link member; only files may be", e.Type)
		}
	}
	if e.Nlink < 1 {
		return entryErr(i, e, "nlink is 0")
	}
	if len(e.Xattrs) > 0 {
		// Linux allows user xattrs on files and directories only.
		if e.Type != TypeFile && e.Type != TypeDir {
			return entryErr(i, e, "a %s has xattrs", e.Type)
		}
		total := 0
		for name, v := range e.Xattrs {
			switch {
			case !strings.HasPrefix(name, "user.") || len(name) == len("user."):
				return entryErr(i, e, "xattr %q is not in the user namespace", trunc(name))
			case len(name) > MaxNameLen:
				return entryErr(i, e, "xattr name is %d bytes, over %d", len(name), MaxNameLen)
			case strings.IndexByte(name, 0) >= 0:
				return entryErr(i, e, "xattr name %q contains a NUL byte", trunc(name))
			}
			total += len(name) + len(v)
		}
		if total > l.MaxXattrBytes {
			return entryErr(i, e, "xattrs take %d bytes, over the limit of %d", total, l.MaxXattrBytes)
		}
	}
	return nil
}

// checkPath returns why p is not an acceptable non-root path, or "".
// Acceptable means clean, relative, slash-separated components that are
// neither empty nor "." nor "..": joined under any directory it stays
// beneath it. Other bytes (backslashes, invalid UTF-8) are just name bytes
// on Linux.
func checkPath(p string, maxLen int) string {
	switch {
	case p == "":
		return "path is empty"
	case len(p) > maxLen:
		return fmt.Sprintf("path is %d bytes, over the limit of %d", len(p), maxLen)
	case p[0] == '/':
		return "path is absolute"
	case strings.IndexByte(p, 0) >= 0:
		return "path contains a NUL byte"
	}
	for rest := p; ; {
		c, tail, more := strings.Cut(rest, "/")
		if c == "" || c == "." || c == ".." {
			return "path is not clean"
		}
		if len(c) > MaxNameLen {
			return fmt.Sprintf("path component is %d bytes, over %d", len(c), MaxNameLen)
		}
		if !more {
			return ""
		}
		rest = tail
	}
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
