package manifest

import (
	"slices"
	"strings"
)

// Tree answers the questions a filesystem view asks of a manifest: the
// parent of an entry, its name, a directory's children in name order, a
// child by name, and the members of each hard-link group. It holds about
// 16 bytes per entry beyond the manifest (children are ranges of one
// shared slice) and takes one pass to build.
//
// Only a valid manifest has a Tree: Validate builds it while checking the
// entries' structure, so whoever holds one may rely on every rule Validate
// enforces without checking again.
type Tree struct {
	entries []Entry
	parent  []int32
	// The children of entry i are kids[start[i]:start[i+1]], sorted by name.
	start []int32
	kids  []int
	// links holds the later members of each hard-link group, by the
	// group's first entry. Hard links are rare: a map costs nothing for
	// the entries that have none.
	links map[int][]int
}

// Tree returns the directory index of m. The index of a manifest that
// passed Validate (as Decode's result has) is the one built then, at no
// cost. A manifest not validated yet, or whose Entries were replaced or
// grown since, is validated now with DefaultLimits; one that does not pass
// has no Tree.
//
// The first Tree of a manifest not yet validated writes m, as Validate
// does: make it before m is shared between goroutines. Entries must not
// change afterwards.
func (m *Manifest) Tree() (*Tree, error) {
	if t := m.tree; t != nil && t.indexes(m) {
		return t, nil
	}
	if err := m.Validate(DefaultLimits); err != nil {
		return nil, err
	}
	return m.tree, nil
}

// indexes tells whether t was built over m's current entries.
func (t *Tree) indexes(m *Manifest) bool {
	return len(t.entries) == len(m.Entries) && len(m.Entries) > 0 && &t.entries[0] == &m.Entries[0]
}

// buildTree resolves every entry's parent, sorts each directory's children
// and groups hard links, for a manifest whose entries passed checkEntry
// (so paths are clean and LinkTo is in range). It stops at the first entry
// whose parent is not an earlier directory, or whose path repeats an
// earlier one.
func buildTree(m *Manifest) (*Tree, error) {
	n := len(m.Entries)
	t := &Tree{
		entries: m.Entries,
		parent:  make([]int32, n),
		start:   make([]int32, n+1),
	}
	// Directories by path. Keys are the entries' own path strings, so the
	// map costs no string copies; only directories go in, as only they can
	// be parents.
	dirs := make(map[string]int32)
	lastDir, lastIdx := "", int32(-1) // siblings come in runs: skip the map
	for i := range m.Entries {
		e := &m.Entries[i]
		if i == 0 {
			t.parent[0] = -1
			dirs["."] = 0
			continue
		}
		if e.LinkTo != NoLink {
			if t.links == nil {
				t.links = make(map[int][]int)
			}
			t.links[e.LinkTo] = append(t.links[e.LinkTo], i)
		}
		pp := "."
		if j := strings.LastIndexByte(e.Path, '/'); j >= 0 {
			pp = e.Path[:j]
		}
		p := int32(-1)
		if pp == lastDir && lastIdx >= 0 {
			p = lastIdx
		} else if d, ok := dirs[pp]; ok {
			p = d
			lastDir, lastIdx = pp, d
		}
		if p < 0 {
			return nil, entryErr(i, e, "parent %q is not an earlier directory", trunc(pp))
		}
		t.parent[i] = p
		t.start[p+1]++
		if e.Type == TypeDir {
			if d, dup := dirs[e.Path]; dup {
				return nil, entryErr(i, e, "duplicate path (also entry %d)", d)
			}
			dirs[e.Path] = int32(i)
		}
	}
	for i := 1; i <= n; i++ {
		t.start[i] += t.start[i-1]
	}
	t.kids = make([]int, t.start[n])
	next := slices.Clone(t.start[:n])
	for i := 1; i < n; i++ {
		p := t.parent[i]
		t.kids[next[p]] = i
		next[p]++
	}
	byName := func(a, b int) int { return strings.Compare(t.Name(a), t.Name(b)) }
	for d := 0; d < n; d++ {
		ks := t.kids[t.start[d]:t.start[d+1]]
		if len(ks) < 2 {
			continue
		}
		// Walk emits children sorted; only a foreign manifest pays for a sort.
		if !slices.IsSortedFunc(ks, byName) {
			slices.SortStableFunc(ks, byName)
		}
		for k := 1; k < len(ks); k++ {
			if t.Name(ks[k-1]) == t.Name(ks[k]) {
				a, b := min(ks[k-1], ks[k]), max(ks[k-1], ks[k])
				return nil, entryErr(b, &m.Entries[b], "duplicate path (also entry %d)", a)
			}
		}
	}
	return t, nil
}

// Len is the number of entries.
func (t *Tree) Len() int { return len(t.parent) }

// Parent is the index of entry i's directory; -1 for the root and for an
// index out of range.
func (t *Tree) Parent(i int) int {
	if i < 0 || i >= len(t.parent) {
		return -1
	}
	return int(t.parent[i])
}

// Name is the last component of entry i's path; "" for the root and for an
// index out of range.
func (t *Tree) Name(i int) string {
	if i <= 0 || i >= len(t.parent) {
		return ""
	}
	p := t.entries[i].Path
	return p[strings.LastIndexByte(p, '/')+1:]
}

// Children lists directory dir's entries sorted by name (byte order); nil
// for a non-directory or an index out of range. The slice is shared: do not
// modify it.
func (t *Tree) Children(dir int) []int {
	if dir < 0 || dir >= len(t.parent) {
		return nil
	}
	s, e := t.start[dir], t.start[dir+1]
	if s == e {
		return nil
	}
	return t.kids[s:e:e]
}

// Lookup finds the entry called name in directory parent, by binary search.
func (t *Tree) Lookup(parent int, name string) (int, bool) {
	ks := t.Children(parent)
	k, ok := slices.BinarySearchFunc(ks, name, func(i int, name string) int {
		return strings.Compare(t.Name(i), name)
	})
	if !ok {
		return -1, false
	}
	return ks[k], true
}

// Leader is the entry that carries entry i's inode and content: the first
// member of its hard-link group, or i itself; -1 for an index out of range.
func (t *Tree) Leader(i int) int {
	if i < 0 || i >= len(t.parent) {
		return -1
	}
	if l := t.entries[i].LinkTo; l != NoLink {
		return l
	}
	return i
}

// Links lists the other names of a hard-linked file: the later members of
// the group whose first member is leader, in manifest order. It is nil for
// an entry that leads no group. The slice is shared: do not modify it.
func (t *Tree) Links(leader int) []int {
	ls := t.links[leader]
	return ls[:len(ls):len(ls)]
}
