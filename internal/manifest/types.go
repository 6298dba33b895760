// Package manifest describes a volume's tree as the source host exports it:
// every entry's path, type, ownership, mode, size, times, link target,
// hard-link group and user xattrs. The target builds its read-only view and
// its copy plan from it, so a manifest from the network is validated as
// untrusted input before use. The package also holds the wire codec, the
// walk that builds a manifest from a local tree, and the Tree, the
// directory and hard-link index that only a validated manifest has.
package manifest

import (
	"os"

	"golang.org/x/sys/unix"
)

// Type is an entry's file type.
type Type uint8

// Entry types. Sockets are not carried: they are meaningless on another host.
const (
	TypeDir Type = iota + 1
	TypeFile
	TypeSymlink
	TypeFIFO
	TypeChar
	TypeBlock
)

func (t Type) String() string {
	switch t {
	case TypeDir:
		return "dir"
	case TypeFile:
		return "file"
	case TypeSymlink:
		return "symlink"
	case TypeFIFO:
		return "fifo"
	case TypeChar:
		return "char"
	case TypeBlock:
		return "block"
	}
	return "unknown"
}

// UnixType is the type's S_IFMT bits, as stat(2) reports and mknod(2)
// takes them; 0 for an unknown type.
func (t Type) UnixType() uint32 {
	switch t {
	case TypeDir:
		return unix.S_IFDIR
	case TypeFile:
		return unix.S_IFREG
	case TypeSymlink:
		return unix.S_IFLNK
	case TypeFIFO:
		return unix.S_IFIFO
	case TypeChar:
		return unix.S_IFCHR
	case TypeBlock:
		return unix.S_IFBLK
	}
	return 0
}

// NoLink marks an entry that is not a later member of a hard-link group.
const NoLink = -1

// Entry is one node of the exported tree.
type Entry struct {
	// Index is the entry's position in the manifest; the root is 0.
	Index int `json:"i"`
	// Path is slash-separated and relative to the volume root; the root
	// itself is ".". Parents come before their children.
	Path string `json:"p"`
	Type Type   `json:"t"`
	// Mode holds the permission bits and the setuid, setgid and sticky
	// bits (07777), not the type.
	Mode    uint32 `json:"m"`
	UID     uint32 `json:"u"`
	GID     uint32 `json:"g"`
	Size    int64  `json:"s,omitempty"`
	MtimeNs int64  `json:"mt"`
	// Target is a symlink's target, verbatim.
	Target string `json:"l,omitempty"`
	// Rdev is a device node's device number.
	Rdev uint64 `json:"r,omitempty"`
	// LinkTo is, for the second and later paths of a hard-linked file, the
	// index of the group's first entry (which carries the content);
	// NoLink otherwise.
	LinkTo int `json:"h"`
	// Nlink is how many entries of this tree share the inode (1 if none).
	Nlink uint32 `json:"n"`
	// Xattrs holds the entry's extended attributes in the user namespace.
	Xattrs map[string][]byte `json:"x,omitempty"`
}

// Manifest is a whole tree.
//
// A manifest from the network is trusted only once it has passed Validate,
// which Decode calls. Validation also builds the manifest's directory
// index, its Tree, which consumers (the read-only view, the replica) take
// instead of checking the entries again.
type Manifest struct {
	Entries []Entry

	// tree is set by a successful Validate.
	tree *Tree
}

// HasContent reports whether e carries file content of its own: a regular
// file that is not a later name of a hard-linked one.
func (e *Entry) HasContent() bool {
	return e.Type == TypeFile && e.LinkTo == NoLink
}

// Totals counts what a copy must move: regular files with content of
// their own (not later hard-link members) and their bytes.
func (m *Manifest) Totals() (files int, bytes int64) {
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.HasContent() {
			files++
			bytes += e.Size
		}
	}
	return files, bytes
}

// PermMode converts Unix permission bits with setuid, setgid and sticky
// (07777) into an os.FileMode, as os.Chmod and os.Mkdir take them.
func PermMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// FileMode is the entry's permission bits as an os.FileMode.
func (e *Entry) FileMode() os.FileMode { return PermMode(e.Mode) }

// UnixMode is the entry's mode as stat(2) reports and mknod(2) takes it:
// type bits and permission bits.
func (e *Entry) UnixMode() uint32 { return e.Type.UnixType() | e.Mode&0o7777 }
