package manifest

import (
	"bytes"
	"reflect"
	"slices"
	"testing"
)

// Small limits keep each run cheap and let the fuzzer reach them.
var fuzzLimits = Limits{MaxEntries: 1000, MaxPathLen: 512, MaxXattrBytes: 1024, MaxLineBytes: 16 << 10,
	MaxBytes: 256 << 10, MaxTotalPathBytes: 8 << 10, MaxTotalXattrBytes: 8 << 10}

// FuzzDecode feeds arbitrary bytes to Decode both as they are and gzipped,
// the latter so that mutations reach the JSON lines rather than dying on a
// gzip checksum. Whatever Decode accepts must validate, encode, and decode
// back equal; its Tree must find every entry and hard link.
//
// Seeds are kept small on purpose: the fuzzer minimises each new input in
// time quadratic in its length.
func FuzzDecode(f *testing.F) {
	small := &Manifest{Entries: []Entry{
		{Index: 0, Path: ".", Type: TypeDir, Mode: 0o755, LinkTo: NoLink, Nlink: 1},
		{Index: 1, Path: "d", Type: TypeDir, Mode: 0o1777, LinkTo: NoLink, Nlink: 1, Xattrs: map[string][]byte{"user.a": []byte("1")}},
		{Index: 2, Path: "d/f", Type: TypeFile, Mode: 0o644, Size: 3, LinkTo: NoLink, Nlink: 2},
		{Index: 3, Path: "g", Type: TypeFile, Mode: 0o644, Size: 3, LinkTo: 2, Nlink: 2},
		{Index: 4, Path: "l\xff", Type: TypeSymlink, Mode: 0o777, Target: "d", LinkTo: NoLink, Nlink: 1},
		{Index: 5, Path: "c", Type: TypeChar, Rdev: 5, LinkTo: NoLink, Nlink: 1},
	}}
	for _, m := range []*Manifest{small, {Entries: small.Entries[:1]}} {
		var buf bytes.Buffer
		if err := Encode(&buf, m); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
		f.Add([]byte(gunzip(f, buf.Bytes())))
	}
	f.Add([]byte(`{"v":1,"n":1}` + "\n" + `{"i":0,"p":".","t":1,"m":493,"u":0,"g":0,"mt":0,"h":-1,"n":1}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		check(t, data)
		check(t, gz(string(data)))
		// Decode's fast path reads a line as json would, or leaves it.
		for line := range bytes.Lines(data) {
			checkFast(t, line)
		}
	})
}

func check(t *testing.T, in []byte) {
	m, err := Decode(bytes.NewReader(in), fuzzLimits)
	if err != nil {
		return
	}
	if err := m.Validate(fuzzLimits); err != nil {
		t.Fatalf("Decode accepted what Validate rejects: %v", err)
	}
	var buf bytes.Buffer
	if err := Encode(&buf, m); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	m2, err := Decode(&buf, fuzzLimits)
	if err != nil {
		t.Fatalf("re-decode: %v", err)
	}
	if !reflect.DeepEqual(m, m2) {
		t.Fatalf("re-decoded manifest differs:\n%+v\n%+v", m.Entries, m2.Entries)
	}
	tr, err := m.Tree()
	if err != nil {
		t.Fatalf("a decoded manifest has no Tree: %v", err)
	}
	for i := 1; i < len(m.Entries); i++ {
		if j, ok := tr.Lookup(tr.Parent(i), tr.Name(i)); !ok || j != i {
			t.Fatalf("Lookup of entry %d gives %d, %v", i, j, ok)
		}
		if l := tr.Leader(i); l != i && !slices.Contains(tr.Links(l), i) {
			t.Fatalf("entry %d is not among the links of its leader %d", i, l)
		}
	}
}
