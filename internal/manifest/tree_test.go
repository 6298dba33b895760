package manifest

import (
	"errors"
	"reflect"
	"testing"
)

func TestTree(t *testing.T) {
	// A valid foreign manifest whose siblings are not in name order.
	m := &Manifest{Entries: []Entry{
		{Path: ".", Type: TypeDir},
		{Path: "z", Type: TypeDir},
		{Path: "b", Type: TypeFile},
		{Path: "z/y", Type: TypeFile},
		{Path: "a", Type: TypeDir},
		{Path: "z/x", Type: TypeDir},
		{Path: "a/only", Type: TypeSymlink, Target: "t"},
		{Path: "Z", Type: TypeFIFO},
		{Path: "z/x/deep", Type: TypeFile},
	}}
	for i := range m.Entries {
		m.Entries[i].Index, m.Entries[i].LinkTo, m.Entries[i].Nlink = i, NoLink, 1
	}
	must(t, m.Validate(DefaultLimits))
	tr, err := m.Tree()
	must(t, err)
	if tr.Len() != 9 {
		t.Errorf("Len = %d", tr.Len())
	}
	children := map[int][]int{0: {7, 4, 2, 1}, 1: {5, 3}, 4: {6}, 5: {8}}
	for i := range m.Entries {
		if got := tr.Children(i); !reflect.DeepEqual(got, children[i]) {
			t.Errorf("Children(%d) = %v, want %v", i, got, children[i])
		}
	}
	parents := []int{-1, 0, 0, 1, 0, 1, 4, 0, 5}
	names := []string{"", "z", "b", "y", "a", "x", "only", "Z", "deep"}
	for i := range m.Entries {
		if p := tr.Parent(i); p != parents[i] {
			t.Errorf("Parent(%d) = %d, want %d", i, p, parents[i])
		}
		if n := tr.Name(i); n != names[i] {
			t.Errorf("Name(%d) = %q, want %q", i, n, names[i])
		}
		if i > 0 {
			if j, ok := tr.Lookup(parents[i], names[i]); !ok || j != i {
				t.Errorf("Lookup(%d, %q) = %d, %v", parents[i], names[i], j, ok)
			}
		}
	}
	for _, c := range []struct {
		dir  int
		name string
	}{{0, "c"}, {0, ""}, {0, "z/y"}, {1, "a"}, {2, "x"}, {-1, "a"}, {99, "a"}} {
		if j, ok := tr.Lookup(c.dir, c.name); ok || j != -1 {
			t.Errorf("Lookup(%d, %q) = %d, %v", c.dir, c.name, j, ok)
		}
	}
	if tr.Parent(-1) != -1 || tr.Parent(9) != -1 || tr.Name(9) != "" || tr.Children(-1) != nil || tr.Children(9) != nil {
		t.Error("out-of-range indices are not handled")
	}
	// Callers cannot grow a listing into its neighbour's.
	if c := tr.Children(1); cap(c) != len(c) {
		t.Errorf("Children has spare capacity %d", cap(c))
	}
}

// An invalid manifest has no Tree, and asking for one must not panic.
func TestTreeInvalid(t *testing.T) {
	for _, m := range []*Manifest{
		{},
		{Entries: []Entry{{Path: "x", Type: TypeFile}}},
		{Entries: []Entry{{Path: ".", Type: TypeDir}, {Path: "a/b"}, {Path: "/a"}, {Path: ""}, {Path: "a", Type: TypeDir}, {Path: "a", Type: TypeDir}, {Path: "a/c"}, {Path: "a/c"}}},
	} {
		if tr, err := m.Tree(); err == nil || tr != nil {
			t.Errorf("Tree of %+v = %v, %v; want an error", m.Entries, tr, err)
		}
	}
}

func TestTreeOfWalk(t *testing.T) {
	m := validSample(t)
	tr, err := m.Tree()
	must(t, err)
	// Every entry is listed exactly once, under its parent.
	seen := make([]int, len(m.Entries))
	for d := range m.Entries {
		for _, c := range tr.Children(d) {
			seen[c]++
			if tr.Parent(c) != d {
				t.Errorf("entry %d listed under %d, parent %d", c, d, tr.Parent(c))
			}
		}
	}
	for i, n := range seen {
		if want := min(i, 1); n != want {
			t.Errorf("entry %d listed %d times", i, n)
		}
	}
}

func TestTreeLinks(t *testing.T) {
	m := sample()
	// A group of three: d/f leads, d/g and z follow.
	m.Entries = append(m.Entries, Entry{Index: 11, Path: "z", Type: TypeFile, Mode: 0o644, Size: 3, LinkTo: 2})
	for _, i := range []int{2, 3, 11} {
		m.Entries[i].Nlink = 3
	}
	tr, err := m.Tree()
	must(t, err)
	if got := tr.Links(2); !reflect.DeepEqual(got, []int{3, 11}) {
		t.Errorf("Links(2) = %v", got)
	}
	for _, i := range []int{0, 3, 4, 11, -1, 99} {
		if got := tr.Links(i); got != nil {
			t.Errorf("Links(%d) = %v, want nil", i, got)
		}
	}
	leaders := map[int]int{0: 0, 2: 2, 3: 2, 4: 4, 11: 2, -1: -1, 12: -1}
	for i, want := range leaders {
		if got := tr.Leader(i); got != want {
			t.Errorf("Leader(%d) = %d, want %d", i, got, want)
		}
	}
	if c := tr.Links(2); cap(c) != len(c) {
		t.Errorf("Links has spare capacity %d", cap(c))
	}
}

// Tree validates a manifest that was not, and again one whose entries were
// replaced; the tree of a validated manifest is the one Validate built.
func TestTreeValidates(t *testing.T) {
	m := sample()
	m.Entries[3].Nlink = 1 // the group has two members
	if _, err := m.Tree(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Tree of an invalid manifest: %v", err)
	}
	m.Entries[3].Nlink = 2
	tr, err := m.Tree()
	must(t, err)
	if tr2, _ := m.Tree(); tr2 != tr {
		t.Error("a second Tree built the index again")
	}
	must(t, m.Validate(DefaultLimits))
	if tr2, _ := m.Tree(); tr2 == tr {
		t.Error("Validate kept the old index")
	}
	m.Entries = append(m.Entries, Entry{Index: 11, Path: "d/f", Type: TypeFile, LinkTo: NoLink, Nlink: 1})
	if _, err := m.Tree(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Tree after a duplicate was appended: %v", err)
	}
	if m.Validate(DefaultLimits) == nil || m.tree != nil {
		t.Error("a manifest that failed Validate kept a tree")
	}
}
