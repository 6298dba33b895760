package manifest

import (
	"errors"
	"strings"
	"testing"
)

// sample is a small valid manifest touching every entry type, a hard-link
// pair, special mode bits, xattrs and a non-ASCII name.
func sample() *Manifest {
	return &Manifest{Entries: []Entry{
		{Index: 0, Path: ".", Type: TypeDir, Mode: 0o755, LinkTo: NoLink, Nlink: 1, Xattrs: map[string][]byte{"user.root": []byte("r")}},
		{Index: 1, Path: "d", Type: TypeDir, Mode: 0o1777, UID: 1000, GID: 1000, MtimeNs: 1, LinkTo: NoLink, Nlink: 1},
		{Index: 2, Path: "d/f", Type: TypeFile, Mode: 0o644, Size: 3, MtimeNs: 2, LinkTo: NoLink, Nlink: 2},
		{Index: 3, Path: "d/g", Type: TypeFile, Mode: 0o644, Size: 3, MtimeNs: 2, LinkTo: 2, Nlink: 2},
		{Index: 4, Path: "l", Type: TypeSymlink, Mode: 0o777, Target: "d/f", LinkTo: NoLink, Nlink: 1},
		{Index: 5, Path: "c", Type: TypeChar, Mode: 0o666, Rdev: 259, LinkTo: NoLink, Nlink: 1},
		{Index: 6, Path: "p", Type: TypeFIFO, Mode: 0o600, LinkTo: NoLink, Nlink: 1},
		{Index: 7, Path: "x y", Type: TypeDir, Mode: 0o2755, LinkTo: NoLink, Nlink: 1},
		{Index: 8, Path: "x", Type: TypeFile, Mode: 0o4755, Size: 10, MtimeNs: -5, LinkTo: NoLink, Nlink: 1,
			Xattrs: map[string][]byte{"user.a": []byte("1"), "user.empty": {}}},
		{Index: 9, Path: "b", Type: TypeBlock, Mode: 0o660, Rdev: 1<<40 | 7, LinkTo: NoLink, Nlink: 1},
		{Index: 10, Path: "x y/ünïcødé ✓", Type: TypeFile, LinkTo: NoLink, Nlink: 1},
	}}
}

func validSample(t testing.TB) *Manifest {
	m := sample()
	if err := m.Validate(DefaultLimits); err != nil {
		t.Fatalf("sample is invalid: %v", err)
	}
	return m
}

func TestValidateAccepts(t *testing.T) {
	m := validSample(t)
	// Order within a directory is free; only parents-first is required.
	m.Entries[2], m.Entries[3] = m.Entries[3], m.Entries[2]
	m.Entries[2].Index, m.Entries[3].Index = 2, 3
	m.Entries[2].LinkTo, m.Entries[3].LinkTo = NoLink, 2
	must(t, m.Validate(DefaultLimits))
	// Just a root.
	must(t, (&Manifest{Entries: []Entry{{Path: ".", Type: TypeDir, LinkTo: NoLink, Nlink: 1}}}).Validate(Limits{}))
	// Backslashes and odd bytes are plain name bytes on Linux.
	m = validSample(t)
	m.Entries[6].Path = `p\..\\x` + "\xff\n"
	must(t, m.Validate(DefaultLimits))
	// Exactly at the limits.
	m = validSample(t)
	m.Entries[6].Path = strings.Repeat("a", 255)
	m.Entries[4].Target = strings.Repeat("t", MaxTargetLen)
	must(t, m.Validate(DefaultLimits))
}

func TestValidateRejects(t *testing.T) {
	long := strings.Repeat("a", 256)
	cases := []struct {
		name   string
		limits Limits
		mutate func(m *Manifest)
		want   string // substring of the error
	}{
		{"no entries", Limits{}, func(m *Manifest) { m.Entries = nil }, "no entries"},
		{"too many entries", Limits{MaxEntries: 3}, func(*Manifest) {}, "over the limit of 3"},
		{"root path", Limits{}, func(m *Manifest) { m.Entries[0].Path = "" }, `entry 0 "": the root entry's path must be "."`},
		{"root type", Limits{}, func(m *Manifest) { m.Entries[0].Type = TypeFile }, "root entry must be a dir"},
		{"index", Limits{}, func(m *Manifest) { m.Entries[4].Index = 5 }, `entry 4 "l": index field is 5`},
		{"empty path", Limits{}, func(m *Manifest) { m.Entries[6].Path = "" }, "path is empty"},
		{"dot path", Limits{}, func(m *Manifest) { m.Entries[6].Path = "." }, `entry 6 ".": path is not clean`},
		{"absolute", Limits{}, func(m *Manifest) { m.Entries[6].Path = "/p" }, "path is absolute"},
		{"dotdot", Limits{}, func(m *Manifest) { m.Entries[2].Path = "d/../f" }, `entry 2 "d/../f": path is not clean`},
		{"leading dotdot", Limits{}, func(m *Manifest) { m.Entries[6].Path = "../p" }, "path is not clean"},
		{"dot component", Limits{}, func(m *Manifest) { m.Entries[2].Path = "./d/f" }, "path is not clean"},
		{"double slash", Limits{}, func(m *Manifest) { m.Entries[2].Path = "d//f" }, "path is not clean"},
		{"trailing slash", Limits{}, func(m *Manifest) { m.Entries[1].Path = "d/" }, "path is not clean"},
		{"NUL in path", Limits{}, func(m *Manifest) { m.Entries[6].Path = "p\x00" }, "NUL"},
		{"long component", Limits{}, func(m *Manifest) { m.Entries[6].Path = long }, "component is 256 bytes"},
		{"long path", Limits{MaxPathLen: 10}, func(m *Manifest) { m.Entries[6].Path = "abcdefghijk" }, "over the limit of 10"},
		{"duplicate file", Limits{}, func(m *Manifest) { m.Entries[3].Path = "d/f" }, `entry 3 "d/f": duplicate path (also entry 2)`},
		{"duplicate dir", Limits{}, func(m *Manifest) { m.Entries[7].Path = "d" }, "duplicate path (also entry 1)"},
		{"file and dir same path", Limits{}, func(m *Manifest) { m.Entries[6].Path = "d" }, "duplicate path"},
		{"missing parent", Limits{}, func(m *Manifest) { m.Entries[6].Path = "zz/p" }, `parent "zz" is not an earlier directory`},
		{"parent is a file", Limits{}, func(m *Manifest) { m.Entries[6].Path = "d/f/p" }, `parent "d/f" is not an earlier directory`},
		{"parent comes later", Limits{}, func(m *Manifest) { m.Entries[6].Path = "x y/p" }, `parent "x y" is not an earlier directory`},
		{"type zero", Limits{}, func(m *Manifest) { m.Entries[6].Type = 0 }, "unknown type 0"},
		{"type too big", Limits{}, func(m *Manifest) { m.Entries[6].Type = TypeBlock + 1 }, "unknown type 7"},
		{"mode type bits", Limits{}, func(m *Manifest) { m.Entries[6].Mode = 0o10600 }, "outside 07777"},
		{"negative size", Limits{}, func(m *Manifest) { m.Entries[8].Size = -1 }, "negative size"},
		{"dir size", Limits{}, func(m *Manifest) { m.Entries[1].Size = 4096 }, "a dir has size 4096"},
		{"symlink size", Limits{}, func(m *Manifest) { m.Entries[4].Size = 3 }, "a symlink has size 3"},
		{"empty target", Limits{}, func(m *Manifest) { m.Entries[4].Target = "" }, "empty target"},
		{"long target", Limits{}, func(m *Manifest) { m.Entries[4].Target = strings.Repeat("t", MaxTargetLen+1) }, "target is 4097 bytes"},
		{"NUL target", Limits{}, func(m *Manifest) { m.Entries[4].Target = "a\x00b" }, "target contains a NUL"},
		{"target on file", Limits{}, func(m *Manifest) { m.Entries[8].Target = "x" }, "a file has a symlink target"},
		{"rdev on fifo", Limits{}, func(m *Manifest) { m.Entries[6].Rdev = 1 }, "a fifo has a device number"},
		{"link to later", Limits{}, func(m *Manifest) { m.Entries[2].LinkTo = 3 }, "hard-link target 3 is not an earlier entry"},
		{"link to self", Limits{}, func(m *Manifest) { m.Entries[3].LinkTo = 3 }, "not an earlier entry"},
		{"link below NoLink", Limits{}, func(m *Manifest) { m.Entries[3].LinkTo = -2 }, "hard-link target -2"},
		{"link to dir", Limits{}, func(m *Manifest) { m.Entries[3].LinkTo = 1 }, "links to entry 1, which is not the first"},
		{"link to member", Limits{}, func(m *Manifest) {
			m.Entries[8] = Entry{Index: 8, Path: "x", Type: TypeFile, Size: 3, LinkTo: 3, Nlink: 2}
		}, "links to entry 3, which is not the first"},
		{"symlink as member", Limits{}, func(m *Manifest) { m.Entries[4].LinkTo = 2 }, "a symlink is a hard-link member"},
		{"member size", Limits{}, func(m *Manifest) { m.Entries[3].Size = 4 }, "size 4 differs from its hard-link target entry 2"},
		{"nlink zero", Limits{}, func(m *Manifest) { m.Entries[6].Nlink = 0 }, "nlink is 0"},
		{"nlink group", Limits{}, func(m *Manifest) { m.Entries[3].Nlink = 3 }, `entry 3 "d/g": nlink is 3, but 2 entries`},
		{"nlink first", Limits{}, func(m *Manifest) { m.Entries[2].Nlink = 1 }, "nlink is 1, but 2 entries"},
		{"nlink lone file", Limits{}, func(m *Manifest) { m.Entries[8].Nlink = 2 }, "nlink is 2, but 1 entries"},
		{"nlink dir", Limits{}, func(m *Manifest) { m.Entries[1].Nlink = 2 }, "nlink is 2"},
		{"xattr namespace", Limits{}, func(m *Manifest) { m.Entries[8].Xattrs["trusted.a"] = nil }, `xattr "trusted.a" is not in the user namespace`},
		{"xattr bare prefix", Limits{}, func(m *Manifest) { m.Entries[8].Xattrs["user."] = nil }, "not in the user namespace"},
		{"xattr long name", Limits{}, func(m *Manifest) { m.Entries[8].Xattrs["user."+long] = nil }, "xattr name is 261 bytes"},
		{"xattr NUL", Limits{}, func(m *Manifest) { m.Entries[8].Xattrs["user.a\x00"] = nil }, "contains a NUL"},
		{"xattr bytes", Limits{MaxXattrBytes: 20}, func(m *Manifest) { m.Entries[8].Xattrs["user.b"] = make([]byte, 10) }, "xattrs take 33 bytes, over the limit of 20"},
		{"xattr on symlink", Limits{}, func(m *Manifest) { m.Entries[4].Xattrs = map[string][]byte{"user.a": nil} }, "a symlink has xattrs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := validSample(t)
			c.mutate(m)
			err := m.Validate(c.limits)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %q, want it to contain %q", err, c.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v does not match ErrInvalid", err)
			}
		})
	}
}

func TestEntryErrorTruncatesPath(t *testing.T) {
	e := &EntryError{Index: 1, Path: strings.Repeat("a", 10000), Reason: "bad"}
	if n := len(e.Error()); n > 300 {
		t.Errorf("message is %d bytes", n)
	}
}
