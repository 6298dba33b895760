package manifest

import (
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
	tr := m.Index()
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

// Index on an invalid manifest must not panic.
func TestTreeInvalid(t *testing.T) {
	for _, m := range []*Manifest{
		{},
		{Entries: []Entry{{Path: "x", Type: TypeFile}}},
		{Entries: []Entry{{Path: ".", Type: TypeDir}, {Path: "a/b"}, {Path: "/a"}, {Path: ""}, {Path: "a", Type: TypeDir}, {Path: "a", Type: TypeDir}, {Path: "a/c"}, {Path: "a/c"}}},
	} {
		tr := m.Index()
		for i := -1; i <= len(m.Entries); i++ {
			tr.Children(i)
			tr.Parent(i)
			tr.Name(i)
			tr.Lookup(i, "a")
			tr.Lookup(i, "c")
		}
	}
}

func TestTreeOfWalk(t *testing.T) {
	m := validSample(t)
	tr := m.Index()
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
