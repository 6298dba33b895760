package manifest

import (
	"slices"
	"strings"
)

// Tree answers the questions a filesystem view asks of a manifest: the
// parent of an entry, its name, a directory's children in name order and a
// child by name. It holds about 16 bytes per entry beyond the manifest
// (children are ranges of one shared slice) and takes one pass to build.
type Tree struct {
	m      *Manifest
	parent []int32
	// The children of entry i are kids[start[i]:start[i+1]], sorted by name.
	start []int32
	kids  []int
}

// Index builds the Tree of m. It is meant for a manifest that passed
// Validate; on one that did not it does not panic, but entries whose parent
// is missing are left out of every listing, and Lookup of a duplicated
// name returns any one of its entries. Entries are not copied: m must not change
// afterwards.
func (m *Manifest) Index() *Tree {
	t, _ := buildTree(m, false)
	return t
}

// buildTree resolves every entry's parent and sorts each directory's
// children. When strict it stops at the first entry whose parent is not an
// earlier directory, or whose path repeats an earlier one.
func buildTree(m *Manifest, strict bool) (*Tree, error) {
	n := len(m.Entries)
	t := &Tree{
		m:      m,
		parent: make([]int32, n),
		start:  make([]int32, n+1),
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
			if e.Type == TypeDir && e.Path == "." {
				dirs["."] = 0
			}
			continue
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
		t.parent[i] = p
		if p < 0 {
			if strict {
				return nil, entryErr(i, e, "parent %q is not an earlier directory", trunc(pp))
			}
			continue
		}
		t.start[p+1]++
		if e.Type == TypeDir {
			if d, dup := dirs[e.Path]; dup {
				if strict {
					return nil, entryErr(i, e, "duplicate path (also entry %d)", d)
				}
				continue
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
		if p := t.parent[i]; p >= 0 {
			t.kids[next[p]] = i
			next[p]++
		}
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
			if t.Name(ks[k-1]) != t.Name(ks[k]) {
				continue
			}
			if strict {
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
	p := t.m.Entries[i].Path
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
