package manifest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func encode(t testing.TB, m *Manifest) []byte {
	t.Helper()
	var buf bytes.Buffer
	must(t, Encode(&buf, m))
	return buf.Bytes()
}

// gzWriters saves the fuzzer a megabyte of compressor state per call.
var gzWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// gz compresses raw as one gzip member.
func gz(raw string) []byte {
	var buf bytes.Buffer
	zw := gzWriters.Get().(*gzip.Writer)
	zw.Reset(&buf)
	if _, err := zw.Write([]byte(raw)); err != nil {
		panic(err) // a bytes.Buffer takes every write
	}
	zw.Close()
	gzWriters.Put(zw)
	return buf.Bytes()
}

func gunzip(t testing.TB, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	must(t, err)
	out, err := io.ReadAll(zr)
	must(t, err)
	return string(out)
}

func TestRoundTrip(t *testing.T) {
	odd := validSample(t)
	// Bytes JSON strings cannot hold go through the base64 side fields.
	odd.Entries[6].Path = "p\xff"
	odd.Entries[4].Target = "\xfe/\x80"
	odd.Entries[8].Xattrs["user.\xff"] = []byte{0, 0xff}
	odd.Entries[8].Xattrs["user.\xfe"] = []byte{}
	odd.Entries[0].Xattrs["user.<html>&"] = []byte("\x00")
	for name, m := range map[string]*Manifest{
		"sample": validSample(t),
		"odd":    odd,
		"root":   {Entries: []Entry{{Path: ".", Type: TypeDir, LinkTo: NoLink, Nlink: 1}}},
	} {
		t.Run(name, func(t *testing.T) {
			must(t, m.Validate(DefaultLimits))
			b := encode(t, m)
			got, err := Decode(bytes.NewReader(b), DefaultLimits)
			must(t, err)
			if !reflect.DeepEqual(got, m) {
				t.Errorf("got  %+v\nwant %+v", got.Entries, m.Entries)
			}
			// Deterministic.
			if b2 := encode(t, m); !bytes.Equal(b, b2) {
				t.Error("two encodings differ")
			}
		})
	}
}

func TestEncodeFormat(t *testing.T) {
	m := validSample(t)
	raw := gunzip(t, encode(t, m))
	lines := strings.SplitAfter(raw, "\n")
	if lines[len(lines)-1] != "" {
		t.Fatalf("output does not end in a newline: %q", raw)
	}
	lines = lines[:len(lines)-1]
	if lines[0] != `{"v":1,"n":11}`+"\n" {
		t.Errorf("header %q", lines[0])
	}
	if len(lines) != 1+len(m.Entries) {
		t.Errorf("%d lines for %d entries", len(lines), len(m.Entries))
	}
	if want := `{"i":3,"p":"d/g","t":2,"m":420,"u":0,"g":0,"s":3,"mt":2,"h":2,"n":2}` + "\n"; lines[4] != want {
		t.Errorf("entry 3 is %q, want %q", lines[4], want)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := gunzip(t, encode(t, validSample(t)))
	goodLines := strings.SplitAfter(good, "\n")
	goodLines = goodLines[:len(goodLines)-1]
	entries := strings.Join(goodLines[1:], "")
	root := `{"i":0,"p":".","t":1,"m":493,"u":0,"g":0,"mt":0,"h":-1,"n":1}` + "\n"

	concat := append(gz(good), gz(good)...)
	badSum := gz(good)
	badSum[len(badSum)-8] ^= 1 // CRC32 in the trailer
	longLine := `{"v":1,"n":1}` + "\n" + `{"i":0,"p":".","t":1,"m":493,"h":-1,"n":1,"u":0` + strings.Repeat(" ", 300) + "}\n"

	cases := []struct {
		name   string
		in     []byte
		limits Limits
		want   string
	}{
		{"empty", nil, Limits{}, "empty input"},
		{"not gzip", []byte(good), Limits{}, "gzip"},
		{"empty stream", gz(""), Limits{}, "no header"},
		{"header not JSON", gz("hello\n" + root), Limits{}, "header"},
		{"header array", gz("[1]\n" + root), Limits{}, "header"},
		{"version 2", gz(`{"v":2,"n":1}` + "\n" + root), Limits{}, "unsupported version 2"},
		{"version 0", gz(`{"v":0,"n":1}` + "\n" + root), Limits{}, "unsupported version 0"},
		{"no version", gz(`{"n":1}` + "\n" + root), Limits{}, "lacks the version"},
		{"null count", gz(`{"v":1,"n":null}` + "\n" + root), Limits{}, "lacks the version or the count"},
		{"upper-case key", gz(`{"V":1,"n":1}` + "\n" + root), Limits{}, `unknown field "V"`},
		{"extra header key", gz(`{"v":1,"n":1,"z":0}` + "\n" + root), Limits{}, `unknown field "z"`},
		{"trailing brace in header", gz(`{"v":1,"n":1}}` + "\n" + root), Limits{}, "header"},
		{"fractional count", gz(`{"v":1,"n":1.5}` + "\n" + root), Limits{}, `header field "n"`},
		{"zero count", gz(`{"v":1,"n":0}` + "\n"), Limits{}, "header count 0"},
		{"count over limit", gz(`{"v":1,"n":1000}` + "\n" + root), Limits{MaxEntries: 999}, "over the limit of 999"},
		{"fewer entries", gz(`{"v":1,"n":12}` + "\n" + entries), Limits{}, "11 entries, but the header says 12"},
		{"more entries", gz(`{"v":1,"n":10}` + "\n" + entries), Limits{}, "data after the 10 entries"},
		{"trailing garbage", gz(good + "x"), Limits{}, "data after the 11 entries"},
		{"trailing blank line", gz(good + "\n"), Limits{}, "data after the 11 entries"},
		{"no final newline", gz(strings.TrimSuffix(good, "\n")), Limits{}, "line 12 is cut short"},
		{"line too long", gz(longLine), Limits{MaxLineBytes: 100}, "line 2 is longer than 100 bytes"},
		{"second gzip member", concat, Limits{}, "data after the gzip stream"},
		{"bytes after gzip", append(gz(good), 0), Limits{}, "data after the gzip stream"},
		{"bad checksum", badSum, Limits{}, "checksum"},
		{"truncated gzip", gz(good)[:40], Limits{}, "truncated"},
		{"entry not JSON", gz(`{"v":1,"n":1}` + "\nnope\n"), Limits{}, "invalid manifest: entry 0: "},
		{"entry wrong type", gz(`{"v":1,"n":1}` + "\n" + `{"i":"0"}` + "\n"), Limits{}, "invalid manifest: entry 0: "},
		{"two values on a line", gz(`{"v":1,"n":1}` + "\n" + strings.TrimSuffix(root, "\n") + " {}\n"), Limits{}, "invalid manifest: entry 0: "},
		{"entry null", gz(`{"v":1,"n":1}` + "\nnull\n"), Limits{}, `manifest entry 0 "": the root entry's path`},
		{"entry invalid", gz(`{"v":1,"n":2}` + "\n" + root + `{"i":1,"p":"../x","t":2,"h":-1,"n":1}` + "\n"), Limits{}, `manifest entry 1 "../x": path is not clean`},
		{"missing link field", gz(`{"v":1,"n":2}` + "\n" + root + `{"i":1,"p":"x","t":2,"n":1}` + "\n"), Limits{}, "links to entry 0"},
		{"path too long early", gz(`{"v":1,"n":2}` + "\n" + root + `{"i":1,"p":"abcdefghijk","t":2,"h":-1,"n":1}` + "\n"), Limits{MaxPathLen: 10}, "over the limit of 10"},
		{"p and pb", gz(`{"v":1,"n":2}` + "\n" + root + `{"i":1,"p":"x","pb":"eA==","t":2,"h":-1,"n":1}` + "\n"), Limits{}, `both "p" and "pb"`},
		{"l and lb", gz(`{"v":1,"n":2}` + "\n" + root + `{"i":1,"p":"x","t":3,"l":"a","lb":"eA==","h":-1,"n":1}` + "\n"), Limits{}, `both "l" and "lb"`},
		{"xattr twice", gz(`{"v":1,"n":2}` + "\n" + root + `{"i":1,"p":"x","t":2,"h":-1,"n":1,"x":{"user.a":""},"xb":[{"n":"dXNlci5h","v":""}]}` + "\n"), Limits{}, `xattr "user.a" is given twice`},
		{"bad base64", gz(`{"v":1,"n":2}` + "\n" + root + `{"i":1,"p":"x","t":2,"h":-1,"n":1,"x":{"user.a":"!!"}}` + "\n"), Limits{}, "invalid manifest: entry 1: "},
		{"validate at end", gz(`{"v":1,"n":2}` + "\n" + root + `{"i":1,"p":"a/x","t":2,"h":-1,"n":1}` + "\n"), Limits{}, `parent "a" is not an earlier directory`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(bytes.NewReader(c.in), c.limits)
			if err == nil {
				t.Fatalf("accepted: %+v", m.Entries)
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

// A failing reader is reported as such, not as an invalid manifest.
func TestDecodeReadError(t *testing.T) {
	boom := errors.New("boom")
	b := encode(t, validSample(t))
	r := io.MultiReader(bytes.NewReader(b[:len(b)/2]), &errReader{boom})
	_, err := Decode(r, Limits{})
	if !errors.Is(err, boom) || errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// A header that claims many entries must not make Decode allocate for them.
func TestDecodeHugeCountIsCheap(t *testing.T) {
	in := gz(`{"v":1,"n":10000000}` + "\n")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := Decode(bytes.NewReader(in), Limits{MaxLineBytes: 4096}); err == nil {
		t.Fatal("accepted")
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 32<<20 {
		t.Errorf("allocated %d bytes", d)
	}
}

func TestDecodeWriter(t *testing.T) {
	// Encode writes through a caller's bufio.Writer without flushing it.
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	must(t, Encode(bw, validSample(t)))
	must(t, bw.Flush())
	if _, err := Decode(&buf, Limits{}); err != nil {
		t.Fatal(err)
	}
}

func ExampleDecode() {
	m := &Manifest{Entries: []Entry{
		{Path: ".", Type: TypeDir, Mode: 0o755, LinkTo: NoLink, Nlink: 1},
		{Index: 1, Path: "hello.txt", Type: TypeFile, Mode: 0o644, Size: 5, LinkTo: NoLink, Nlink: 1},
	}}
	var buf bytes.Buffer
	if err := Encode(&buf, m); err != nil {
		panic(err)
	}
	got, err := Decode(&buf, DefaultLimits)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(got.Entries), got.Entries[1].Path)
	// Output: 2 hello.txt
}
