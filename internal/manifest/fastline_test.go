package manifest

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// checkFast holds parseFast to json.Unmarshal on one line: whatever the
// fast path accepts, json must accept and read into an equal entry.
func checkFast(t *testing.T, line []byte) (fast bool) {
	t.Helper()
	var got Entry
	var strs stringArena
	if !parseFast(line, &got, &strs) {
		return false
	}
	var want wireEntry
	if err := json.Unmarshal(line, &want); err != nil {
		t.Fatalf("parseFast accepted %q, which json refuses: %v", line, err)
	}
	if want.PathB != nil || want.TargetB != nil || want.XattrB != nil || !reflect.DeepEqual(got, want.Entry) {
		t.Fatalf("parseFast read %q as\n%+v, json as\n%+v", line, got, want)
	}
	return true
}

// Every line Encode writes for an entry without xattrs takes the fast
// path, and reads back as json reads it.
func TestParseFastTakesEncodedLines(t *testing.T) {
	m := validSample(t)
	m.Entries = append(m.Entries, synthetic(300).Entries[1:]...)
	extra := []Entry{
		{Path: "ünïcödé/名前", Type: TypeFile, Size: 1<<63 - 1, MtimeNs: -1 << 62, Mode: 0o7777, UID: 1<<32 - 1, GID: 1<<32 - 1, LinkTo: NoLink, Nlink: 1<<32 - 1},
		{Path: "dev", Type: TypeBlock, Rdev: 1<<63 + 5, LinkTo: 3, Nlink: 2},
		{Path: "l", Type: TypeSymlink, Target: "../x y/€", LinkTo: NoLink, Nlink: 1},
	}
	m.Entries = append(m.Entries, extra...)
	var buf bytes.Buffer
	must(t, Encode(&buf, m))
	lines := strings.SplitAfter(gunzip(t, buf.Bytes()), "\n")
	lines = lines[1 : len(lines)-1] // the header, and "" after the last '\n'
	if len(lines) != len(m.Entries) {
		t.Fatalf("%d lines for %d entries", len(lines), len(m.Entries))
	}
	for i, l := range lines {
		e := &m.Entries[i]
		fast := checkFast(t, []byte(l))
		if plain := len(e.Xattrs) == 0 && plainUTF8(e) && !strings.ContainsAny(e.Path+e.Target, "\\\"\n\t\x01") &&
			!strings.ContainsAny(e.Path+e.Target, "\u2028\u2029"); fast != plain {
			t.Errorf("entry %d %q: fast path %v, want %v", i, l, fast, plain)
		}
	}
}

// Lines of any other shape go to json, which accepts or refuses them as
// it always did.
func TestParseFastLeavesTheRestToJSON(t *testing.T) {
	for _, l := range []string{
		`{"i":1,"p":"a","t":2,"m":420,"u":0,"g":0,"mt":0,"h":-1,"n":1}`, // the plain shape: fast
		`{"i":1,"p":"a","t":2}`,
		`{"n":1,"h":-1,"p":"a","i":1}`,
		`{"i":01,"p":"a"}`, `{"i":-0,"p":"a"}`, `{"i":-,"p":"a"}`, `{"i":1.0}`, `{"i":1e3}`, `{"i":null}`,
		`{"i":9223372036854775807}`, `{"i":9223372036854775808}`, `{"i":-9223372036854775807}`,
		`{"i":-9223372036854775808}`, `{"i":12345678901234567890}`, `{"r":18446744073709551615}`,
		`{"r":9999999999999999999}`, `{"t":255}`, `{"t":256}`, `{"m":4294967295}`, `{"m":4294967296}`, `{"m":-1}`,
		`{"i":1,"i":2}`, `{"I":1}`, `{"P":"a"}`, `{"mt":1,"mt":2}`, `{"m":1,"mtx":2}`, `{"x":{}}`, `{"pb":"YQ=="}`,
		`{"z":1}`, `{}`, `{ "i":1}`, `{"i" :1}`, `{"i":1 }`, `{"i":1,}`, `{,"i":1}`, `{"i":1}x`, `[1]`,
		`{"p":"a\"b"}`, `{"p":"a\\b"}`, `{"p":"a\u0041"}`, "{\"p\":\"a\tb\"}", "{\"p\":\"\xff\"}",
		"{\"p\":\"\xe2\x80\xa8\"}", `{"p":"€"}`, `{"p":""}`, `{"p":"a`, `{"p":1}`, `{"i":"1"}`, `{"p":"a"`, `"i":1}`,
		`{"l":"t","p":"a"}`, `{"i":true}`, `{"p":null}`,
	} {
		checkFast(t, []byte(l+"\n"))
	}
	if !checkFast(t, []byte(`{"i":1,"p":"a","t":2,"m":420,"u":0,"g":0,"mt":0,"h":-1,"n":1}`+"\n")) {
		t.Error("the plain shape did not take the fast path")
	}
	if checkFast(t, []byte(`{"i":1}`)) {
		t.Error("a line without its newline took the fast path")
	}
}

// appendPlain writes what json.Encoder writes, byte for byte, or leaves
// the entry to it.
func TestAppendPlainIsJSON(t *testing.T) {
	es := append(validSample(t).Entries, synthetic(300).Entries...)
	for _, p := range []string{"ünï/名", "a\"b", `a\b`, "a\tb", "\xff", "a\u2028", "a\u2029b", "\x7f", "<&>", ""} {
		es = append(es, Entry{Path: p, Target: p, Type: TypeSymlink, Size: -3, MtimeNs: -5, Rdev: 1<<64 - 1, LinkTo: NoLink, Nlink: 1})
	}
	plain := 0
	for i := range es {
		e := &es[i]
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		must(t, enc.Encode(e))
		got, ok := appendPlain(nil, e)
		if !ok {
			if len(got) != 0 {
				t.Fatalf("entry %+v: appended %q and answered false", e, got)
			}
			continue
		}
		plain++
		if string(got) != want.String() {
			t.Errorf("entry %+v:\n got %s\nwant %s", e, got, want.Bytes())
		}
	}
	if plain < len(es)/2 {
		t.Errorf("only %d of %d entries took the plain path", plain, len(es))
	}
}
