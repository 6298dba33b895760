package manifest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

// realVolume builds a manifest shaped like a real volume of dirs*perDir
// regular files: dirs directories of perDir files each, paths of about
// 90 bytes, and one 14-byte-named, 40-byte xattr on every file and
// directory, as Samba's user.DOSATTRIB puts there.
func realVolume(dirs, perDir int) *Manifest {
	m := &Manifest{Entries: make([]Entry, 0, 3+dirs*(perDir+1))}
	add := func(e Entry) {
		e.Index, e.LinkTo, e.Nlink = len(m.Entries), NoLink, 1
		m.Entries = append(m.Entries, e)
	}
	dosattrib := func() map[string][]byte {
		return map[string][]byte{"user.DOSATTRIB": []byte("0x20\x00\x00\x00\x04\x00\x04\x00\x00\x00\x51\x00\x00\x00\x20\x00" +
			"\x00\x00\x8e\x2c\xa5\x30\x79\x2e\xda\x01\x8e\x2c\xa5\x30\x79\x2e\xda\x01\x00\x00")}
	}
	add(Entry{Path: ".", Type: TypeDir, Mode: 0o755})
	add(Entry{Path: "srv", Type: TypeDir, Mode: 0o755})
	add(Entry{Path: "srv/data", Type: TypeDir, Mode: 0o755})
	for d := range dirs {
		dp := fmt.Sprintf("srv/data/projects-%05d", d)
		add(Entry{Path: dp, Type: TypeDir, Mode: 0o2775, UID: 1000, GID: 1000, MtimeNs: 1700000000123456789, Xattrs: dosattrib()})
		for f := range perDir {
			add(Entry{
				Path: fmt.Sprintf("%s/quarterly-report-%06d-final-version-approved-by-finance-dept.pdf", dp, d*perDir+f),
				Type: TypeFile, Mode: 0o644, UID: 1000, GID: 1000, Size: int64(1000 + f*4096), MtimeNs: 1700000000123456789,
				Xattrs: dosattrib(),
			})
		}
	}
	return m
}

// TestDefaultLimitsFitAMillionFiles: a real volume of 1,000,000 files
// decodes under half of every default. Every limit adds up per entry, so
// a fiftieth of the volume is checked against a hundredth of the defaults.
func TestDefaultLimitsFitAMillionFiles(t *testing.T) {
	const scale = 50
	m := realVolume(10_000/scale, 100)
	var buf bytes.Buffer
	must(t, Encode(&buf, m))
	enc := buf.Bytes()

	b := budget{l: &Limits{MaxTotalPathBytes: 1 << 62, MaxTotalXattrBytes: 1 << 62, MaxTotalXattrs: 1 << 62}}
	for i := range m.Entries {
		must(t, b.add(&m.Entries[i]))
	}
	raw := int64(len(gunzip(t, enc)))
	t.Logf("a million files: %d entries, %d MiB decompressed, %d MiB compressed, %d MiB of paths, %d MiB of xattrs as counted",
		scale*len(m.Entries), scale*raw>>20, scale*len(enc)>>20, scale*b.paths>>20, scale*b.xattrs>>20)

	const margin = 2
	d := DefaultLimits
	half := Limits{
		MaxEntries:         d.MaxEntries / scale / margin,
		MaxBytes:           d.MaxBytes / scale / margin,
		MaxTotalPathBytes:  d.MaxTotalPathBytes / scale / margin,
		MaxTotalXattrBytes: d.MaxTotalXattrBytes / scale / margin,
		MaxTotalXattrs:     d.MaxTotalXattrs / scale / margin,
	}
	if _, err := Decode(bytes.NewReader(enc), half); err != nil {
		t.Fatalf("a fiftieth of a million files does not decode under a hundredth of the defaults: %v", err)
	}
}

// bomb gzips a manifest whose header claims claim entries, with entry
// lines from line until the decompressed stream has at least size bytes:
// a prefix, as small as a real attack's gzip, of a stream that goes on.
func bomb(t *testing.T, claim int, size int64, line func(i int) string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	must(t, err)
	n, err := fmt.Fprintf(zw, `{"v":1,"n":%d}`+"\n", claim)
	must(t, err)
	written := int64(n)
	for i := 0; written < size; i++ {
		n, err := io.WriteString(zw, line(i))
		must(t, err)
		written += int64(n)
	}
	must(t, zw.Close())
	return buf.Bytes()
}

const rootLine = `{"i":0,"p":".","t":1,"m":493,"u":0,"g":0,"mt":0,"h":-1,"n":1}` + "\n"

// TestDecodeBombs feeds Decode small gzip streams that ask for far more
// than the limits allow, and checks that it stops at the limit with an
// error that names it, having allocated a small multiple of the limit, not
// of what the stream asks for.
func TestDecodeBombs(t *testing.T) {
	const claim = 4_000_000
	xattrValue := strings.Repeat("A", 200<<10/3*4) // base64 of 200 KiB of zeros
	component := strings.Repeat("d", 250)
	longDir := strings.Repeat(component+"/", 15) // parents are checked at the end only
	padding := strings.Repeat(" ", 900<<10)

	cases := []struct {
		name   string
		limits Limits
		asks   int64 // bytes the stream's header and lines ask for
		size   int64 // bytes of the prefix built
		line   func(i int) string
		limit  string
		budget int64 // allocation allowed
	}{
		{
			name:   "xattrs",
			limits: Limits{MaxTotalXattrBytes: 4 << 20},
			asks:   claim * 200 << 10,
			size:   8 << 20,
			line: func(i int) string {
				if i == 0 {
					return rootLine
				}
				return fmt.Sprintf(`{"i":%d,"p":"f%d","t":2,"h":-1,"n":1,"x":{"user.a":"%s"}}`+"\n", i, i, xattrValue)
			},
			limit:  "MaxTotalXattrBytes",
			budget: 24 << 20,
		},
		{
			name:   "paths",
			limits: Limits{MaxTotalPathBytes: 4 << 20},
			asks:   claim * 4000,
			size:   8 << 20,
			line: func(i int) string {
				if i == 0 {
					return rootLine
				}
				return fmt.Sprintf(`{"i":%d,"p":"%s%d","t":2,"h":-1,"n":1}`+"\n", i, longDir, i)
			},
			limit:  "MaxTotalPathBytes",
			budget: 24 << 20,
		},
		{
			name:   "decompressed bytes",
			limits: Limits{MaxBytes: 8 << 20},
			asks:   claim * 900 << 10,
			size:   12 << 20,
			line: func(i int) string {
				if i == 0 {
					return strings.TrimSuffix(rootLine, "}\n") + padding + "}\n"
				}
				return fmt.Sprintf(`{"i":%d,"p":"f%d","t":2,"h":-1,"n":1%s}`+"\n", i, i, padding)
			},
			limit:  "MaxBytes",
			budget: 16 << 20, // 7 MiB of it the first slab of Entries, for 65,536
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := bomb(t, claim, tc.size, tc.line)
			if int64(len(in)) > tc.size/100 {
				t.Fatalf("the crafted stream is %d bytes for %d decompressed: not a bomb", len(in), tc.size)
			}
			alloc, took, err := measureDecode(in, tc.limits)
			t.Logf("%d bytes of gzip asking for %d GiB: refused after %v, %d MiB allocated: %v",
				len(in), tc.asks>>30, took, alloc>>20, err)
			checkLimitError(t, err, tc.limit)
			if alloc > uint64(tc.budget) {
				t.Errorf("allocated %d MiB, want at most %d MiB", alloc>>20, tc.budget>>20)
			}
		})
	}

	// Empty deflate blocks decompress to nothing, so only the bound on the
	// compressed input ends an endless stream of them.
	t.Run("compressed bytes", func(t *testing.T) {
		hdr := gz("")[:10] // the gzip header alone
		empty := []byte{0, 0, 0, 0xff, 0xff}
		alloc, _, err := measureDecode(io.MultiReader(bytes.NewReader(hdr), &repeatReader{b: empty}), Limits{MaxBytes: 4 << 20})
		checkLimitError(t, err, "MaxBytes")
		if !strings.Contains(err.Error(), "compressed manifest") {
			t.Errorf("err = %v, want it to say the compressed manifest", err)
		}
		if alloc > 16<<20 {
			t.Errorf("allocated %d MiB", alloc>>20)
		}
	})
}

func measureDecode(in any, l Limits) (alloc uint64, took time.Duration, err error) {
	var r io.Reader
	switch in := in.(type) {
	case []byte:
		r = bytes.NewReader(in)
	case io.Reader:
		r = in
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err = Decode(r, l)
	took = time.Since(start)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, took, err
}

func checkLimitError(t *testing.T, err error, limit string) {
	t.Helper()
	var le *LimitError
	switch {
	case !errors.As(err, &le):
		t.Fatalf("err = %v, want a *LimitError", err)
	case le.Limit != limit:
		t.Errorf("limit %s exceeded, want %s: %v", le.Limit, limit, err)
	case !errors.Is(err, ErrInvalid):
		t.Errorf("err = %v does not match ErrInvalid", err)
	}
	if msg := err.Error(); !strings.Contains(msg, limit) || !strings.Contains(msg, "trust") {
		t.Errorf("the message %q does not name the limit and what to do", msg)
	}
}

// repeatReader repeats b for ever.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
	}
	return n, nil
}

func TestValidateTotals(t *testing.T) {
	m := validSample(t)
	var paths, xattrs, nx int64
	for i := range m.Entries {
		e := &m.Entries[i]
		paths += int64(len(e.Path) + len(e.Target))
		nx += int64(len(e.Xattrs))
		if len(e.Xattrs) > 0 {
			xattrs += XattrMapOverhead
		}
		for n, v := range e.Xattrs {
			xattrs += int64(len(n) + len(v) + XattrOverhead)
		}
	}
	must(t, m.Validate(Limits{MaxTotalPathBytes: paths, MaxTotalXattrBytes: xattrs}))
	for _, tc := range []struct {
		l     Limits
		limit string
	}{
		{Limits{MaxTotalPathBytes: paths - 1}, "MaxTotalPathBytes"},
		{Limits{MaxTotalXattrBytes: xattrs - 1}, "MaxTotalXattrBytes"},
		{Limits{MaxTotalXattrs: nx - 1}, "MaxTotalXattrs"},
		{Limits{MaxEntries: len(m.Entries) - 1}, "MaxEntries"},
	} {
		err := m.Validate(tc.l)
		checkLimitError(t, err, tc.limit)
		if _, err := m.Tree(); err != nil {
			t.Errorf("a failed Validate left the manifest without a Tree under the defaults: %v", err)
		}
	}
	// Decode counts the same.
	enc := encode(t, m)
	if _, err := Decode(bytes.NewReader(enc), Limits{MaxTotalPathBytes: paths, MaxTotalXattrBytes: xattrs}); err != nil {
		t.Fatal(err)
	}
	_, err := Decode(bytes.NewReader(enc), Limits{MaxTotalXattrBytes: xattrs - 1})
	checkLimitError(t, err, "MaxTotalXattrBytes")
	raw := int64(len(gunzip(t, enc)))
	if _, err := Decode(bytes.NewReader(enc), Limits{MaxBytes: raw}); err != nil {
		t.Fatalf("a stream of exactly MaxBytes: %v", err)
	}
	_, err = Decode(bytes.NewReader(enc), Limits{MaxBytes: raw - 1})
	checkLimitError(t, err, "MaxBytes")
}
