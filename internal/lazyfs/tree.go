package lazyfs

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"syscall"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// tree is the read-only directory index over a manifest, built in one pass
// so lookups need no per-directory maps: the children of every directory
// are a contiguous, name-sorted run of kids (compressed sparse rows), found
// by binary search. For a million entries this costs about 16 MB on top of
// the manifest itself, and no Inode exists until the kernel asks for it.
type tree struct {
	entries []manifest.Entry
	// start[i]..start[i+1] is the run of kids holding i's children; empty
	// for non-directories.
	start []int32
	kids  []int32
	// parent[i] is i's directory; the root is its own parent.
	parent []int32
	// subdirs[i] counts i's child directories, for a directory's nlink.
	subdirs []uint32

	// Statfs numbers, fixed because the tree is frozen.
	totalBytes int64
}

// maxEntries keeps indices in int32 and inode numbers (index+1) clear of
// go-fuse's reserved value.
const maxEntries = math.MaxInt32 - 1

// newTree validates m (it may come from the network) and indexes it.
func newTree(m *manifest.Manifest) (*tree, error) {
	es := m.Entries
	n := len(es)
	if n == 0 {
		return nil, fmt.Errorf("lazyfs: empty manifest")
	}
	if n > maxEntries {
		return nil, fmt.Errorf("lazyfs: manifest has %d entries, at most %d supported", n, maxEntries)
	}
	if es[0].Path != "." || es[0].Type != manifest.TypeDir {
		return nil, fmt.Errorf("lazyfs: entry 0 must be the root directory \".\", got %q (%v)", es[0].Path, es[0].Type)
	}
	t := &tree{
		entries: es,
		start:   make([]int32, n+1),
		parent:  make([]int32, n),
		subdirs: make([]uint32, n),
	}
	// Only directories can be parents, so only they go in the map.
	dirs := map[string]int32{".": 0}
	count := make([]int32, n)
	for i := range es {
		e := &es[i]
		if e.Index != i {
			return nil, fmt.Errorf("lazyfs: entry %d has index %d", i, e.Index)
		}
		if typeBits(e.Type) == 0 {
			return nil, fmt.Errorf("lazyfs: entry %d (%q): unknown type %d", i, e.Path, e.Type)
		}
		if e.Type == manifest.TypeFile && e.Size < 0 {
			return nil, fmt.Errorf("lazyfs: entry %d (%q): negative size", i, e.Path)
		}
		if e.LinkTo != manifest.NoLink {
			l := e.LinkTo
			if l < 0 || l >= i || es[l].LinkTo != manifest.NoLink || es[l].Type != e.Type || e.Type == manifest.TypeDir {
				return nil, fmt.Errorf("lazyfs: entry %d (%q): bad hard-link target %d", i, e.Path, l)
			}
		}
		if i == 0 {
			continue
		}
		dir, name := splitPath(e.Path)
		if !validName(name) || dir != "." && !validPath(dir) {
			return nil, fmt.Errorf("lazyfs: entry %d: invalid path %q", i, e.Path)
		}
		p, ok := dirs[dir]
		if !ok {
			return nil, fmt.Errorf("lazyfs: entry %d (%q): parent directory is not an earlier entry", i, e.Path)
		}
		t.parent[i] = p
		count[p]++
		if e.Type == manifest.TypeDir {
			if _, dup := dirs[e.Path]; dup {
				return nil, fmt.Errorf("lazyfs: entry %d: duplicate path %q", i, e.Path)
			}
			dirs[e.Path] = int32(i)
			t.subdirs[p]++
		}
		if e.Type == manifest.TypeFile && e.LinkTo == manifest.NoLink {
			t.totalBytes += e.Size
		}
	}
	for i := 0; i < n; i++ {
		t.start[i+1] = t.start[i] + count[i]
	}
	t.kids = make([]int32, n-1)
	fill := count // reuse: next free slot per directory
	for i := 0; i < n; i++ {
		fill[i] = t.start[i]
	}
	for i := 1; i < n; i++ {
		p := t.parent[i]
		t.kids[fill[p]] = int32(i)
		fill[p]++
	}
	for d := 0; d < n; d++ {
		run := t.kids[t.start[d]:t.start[d+1]]
		if len(run) < 2 {
			continue
		}
		slices.SortFunc(run, func(a, b int32) int { return strings.Compare(t.name(a), t.name(b)) })
		for k := 1; k < len(run); k++ {
			if t.name(run[k-1]) == t.name(run[k]) {
				return nil, fmt.Errorf("lazyfs: duplicate path %q", es[run[k]].Path)
			}
		}
	}
	return t, nil
}

// splitPath splits a slash-separated relative path into its directory
// ("." for top-level names) and last component.
func splitPath(p string) (dir, name string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return ".", p
}

func validName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 255 && !strings.ContainsAny(s, "/\x00")
}

func validPath(p string) bool {
	for c := range strings.SplitSeq(p, "/") {
		if !validName(c) {
			return false
		}
	}
	return true
}

func (t *tree) name(i int32) string {
	_, name := splitPath(t.entries[i].Path)
	return name
}

func (t *tree) children(dir int32) []int32 {
	return t.kids[t.start[dir]:t.start[dir+1]]
}

// lookup finds name in directory dir.
func (t *tree) lookup(dir int32, name string) (int32, bool) {
	run := t.children(dir)
	k, found := slices.BinarySearchFunc(run, name, func(c int32, name string) int {
		return strings.Compare(t.name(c), name)
	})
	if !found {
		return 0, false
	}
	return run[k], true
}

// leader is the entry that carries i's inode: the first member of its
// hard-link group, or i itself.
func (t *tree) leader(i int32) int32 {
	if l := t.entries[i].LinkTo; l != manifest.NoLink {
		return int32(l)
	}
	return i
}

// ino is the stable inode number of entry i's inode. Index 0 (the root)
// maps to 1, which is also FUSE_ROOT_ID's conventional inode number.
func (t *tree) ino(i int32) uint64 {
	return uint64(t.leader(i)) + 1
}

func typeBits(t manifest.Type) uint32 {
	switch t {
	case manifest.TypeDir:
		return syscall.S_IFDIR
	case manifest.TypeFile:
		return syscall.S_IFREG
	case manifest.TypeSymlink:
		return syscall.S_IFLNK
	case manifest.TypeFIFO:
		return syscall.S_IFIFO
	case manifest.TypeChar:
		return syscall.S_IFCHR
	case manifest.TypeBlock:
		return syscall.S_IFBLK
	}
	return 0
}
