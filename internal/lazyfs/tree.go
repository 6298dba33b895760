package lazyfs

import (
	"fmt"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// tree is what the filesystem serves: the manifest's directory index
// (children are name-sorted runs found by binary search, so no Inode
// exists until the kernel asks for it) and the few numbers FUSE asks for
// that the manifest does not hold.
type tree struct {
	*manifest.Tree
	entries []manifest.Entry
	// subdirs[i] counts i's child directories, for a directory's nlink.
	subdirs []uint32
	// Statfs numbers, fixed because the tree is frozen.
	totalBytes int64
}

// newTree takes m's index. A manifest that has passed manifest.Validate
// (Decode's result) is trusted as it is; any other is validated now.
func newTree(m *manifest.Manifest) (*tree, error) {
	mt, err := m.Tree()
	if err != nil {
		return nil, fmt.Errorf("lazyfs: %w", err)
	}
	t := &tree{Tree: mt, entries: m.Entries, subdirs: make([]uint32, len(m.Entries))}
	for i := 1; i < len(m.Entries); i++ {
		if m.Entries[i].Type == manifest.TypeDir {
			t.subdirs[mt.Parent(i)]++
		}
	}
	_, t.totalBytes = m.Totals()
	return t, nil
}

// ino is the stable inode number of entry i's inode, shared by a
// hard-link group. Index 0 (the root) maps to 1, which is also
// FUSE_ROOT_ID's conventional inode number; a manifest has fewer than
// math.MaxInt32 entries, so numbers stay clear of go-fuse's reserved one.
func (t *tree) ino(i int) uint64 {
	return uint64(t.Leader(i)) + 1
}

// parentDir is directory i's parent; the root is its own.
func (t *tree) parentDir(i int) int {
	return max(t.Parent(i), 0)
}
