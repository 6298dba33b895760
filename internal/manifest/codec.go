package manifest

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// The wire format is gzip (BestSpeed) of JSON lines: a header line
// {"v":1,"n":<entries>} and then one line per entry in order, each the
// Entry's JSON (its struct tags), and nothing else.
//
// JSON strings cannot carry bytes that are not UTF-8, but Linux names can
// hold any byte but NUL and '/'. An entry whose path, symlink target or
// xattr name is not valid UTF-8 therefore carries that value as base64
// bytes instead, in fields Entry does not have: "pb" for the path (with
// "p" empty), "lb" for the target (with "l" absent), and "xb", a list of
// {"n":name,"v":value} for such xattr names (the valid ones stay in "x").
const formatVersion = 1

type header struct {
	V *int `json:"v"`
	N *int `json:"n"`
}

// parseHeader is stricter than json.Unmarshal into header: keys match
// exactly and no others are allowed, so a future format cannot be misread.
func parseHeader(line []byte) (header, error) {
	var h header
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return h, fmt.Errorf("%w: header: %w", ErrInvalid, err)
	}
	for k, v := range raw {
		var dst **int
		switch k {
		case "v":
			dst = &h.V
		case "n":
			dst = &h.N
		default:
			return h, fmt.Errorf("%w: header: unknown field %q", ErrInvalid, trunc(k))
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return h, fmt.Errorf("%w: header field %q: %w", ErrInvalid, k, err)
		}
	}
	return h, nil
}

type wireXattr struct {
	N []byte `json:"n"`
	V []byte `json:"v"`
}

type wireEntry struct {
	Entry
	PathB   []byte      `json:"pb,omitempty"`
	TargetB []byte      `json:"lb,omitempty"`
	XattrB  []wireXattr `json:"xb,omitempty"`
}

// Encode writes m to w in the wire format. It does not validate m, nor
// flush or close w.
func Encode(w io.Writer, m *Manifest) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	// Entries are ~150 bytes each: batch them before the compressor.
	bw := bufio.NewWriterSize(zw, 64<<10)
	enc := json.NewEncoder(bw) // Encode ends each value with '\n'
	enc.SetEscapeHTML(false)
	n := len(m.Entries)
	v := formatVersion
	if err := enc.Encode(header{V: &v, N: &n}); err != nil {
		return fmt.Errorf("manifest: encode header: %w", err)
	}
	var we wireEntry
	var line []byte
	for i := range m.Entries {
		e := &m.Entries[i]
		var err error
		var ok bool
		if line, ok = appendPlain(line[:0], e); ok {
			_, err = bw.Write(line)
		} else if plainUTF8(e) {
			err = enc.Encode(e)
		} else {
			toWire(&we, e)
			err = enc.Encode(&we)
		}
		if err != nil {
			return fmt.Errorf("manifest: encode entry %d: %w", i, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

func plainUTF8(e *Entry) bool {
	if !utf8.ValidString(e.Path) || !utf8.ValidString(e.Target) {
		return false
	}
	for name := range e.Xattrs {
		if !utf8.ValidString(name) {
			return false
		}
	}
	return true
}

func toWire(we *wireEntry, e *Entry) {
	*we = wireEntry{Entry: *e}
	if !utf8.ValidString(e.Path) {
		we.Path, we.PathB = "", []byte(e.Path)
	}
	if !utf8.ValidString(e.Target) {
		we.Target, we.TargetB = "", []byte(e.Target)
	}
	var valid map[string][]byte
	for name, v := range e.Xattrs {
		if utf8.ValidString(name) {
			if valid == nil {
				valid = make(map[string][]byte, len(e.Xattrs))
			}
			valid[name] = v
		} else {
			we.XattrB = append(we.XattrB, wireXattr{N: []byte(name), V: v})
		}
	}
	we.Xattrs = valid
	// Deterministic output, as for the map.
	slices.SortFunc(we.XattrB, func(a, b wireXattr) int { return bytes.Compare(a.N, b.N) })
}

// Decode reads a manifest in the wire format from untrusted r, enforcing
// limits (zero fields take DefaultLimits) as it goes, and returns it only
// if it passes Validate, with the Tree that Validate built. It reads r to
// its end: bytes after the gzip stream are an error. Memory stays within
// one line buffer of MaxLineBytes plus the entries accepted so far, each
// bounded by the per-entry limits and all of them by the totals; a stream
// that goes over a total fails with a *LimitError as soon as it does.
func Decode(r io.Reader, limits Limits) (*Manifest, error) {
	l := limits.withDefaults()
	// A ByteReader, so gzip reads through it and we can check what follows.
	br := bufio.NewReader(&capReader{r: r, left: l.MaxBytes,
		over: &LimitError{Limit: "MaxBytes", What: "the compressed manifest", Max: l.MaxBytes}})
	zr, err := gzip.NewReader(br)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty input", ErrInvalid)
		}
		return nil, decodeErr(err)
	}
	zr.Multistream(false)
	lr := bufio.NewReaderSize(&capReader{r: zr, left: l.MaxBytes,
		over: &LimitError{Limit: "MaxBytes", What: "the decompressed manifest", Max: l.MaxBytes}}, l.MaxLineBytes)

	line, err := readLine(lr, 0, l)
	if err != nil {
		return nil, err
	}
	h, err := parseHeader(line)
	if err != nil {
		return nil, err
	}
	switch {
	case h.V == nil || h.N == nil:
		return nil, fmt.Errorf("%w: header lacks the version or the count", ErrInvalid)
	case *h.V != formatVersion:
		return nil, fmt.Errorf("%w: unsupported version %d (want %d)", ErrInvalid, *h.V, formatVersion)
	case *h.N < 1:
		return nil, fmt.Errorf("%w: header count %d (the root is required)", ErrInvalid, *h.N)
	case *h.N > l.MaxEntries:
		return nil, &LimitError{Limit: "MaxEntries", What: fmt.Sprintf("the header's count of %d entries", *h.N),
			Max: int64(l.MaxEntries)}
	}
	n := *h.N
	b := budget{l: &l}
	// The count is a claim, not a budget: grow as entries really arrive,
	// until an eighth of them has. Then take the whole count at once:
	// growing a slice of a million entries step by step held the old and
	// the new array together, 1.8 times the final one at the peak.
	m := &Manifest{Entries: make([]Entry, 0, min(n, 1<<16))}
	var strs stringArena
	var we wireEntry
	for i := 0; i < n; i++ {
		line, err := readLine(lr, i+1, l)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: %d entries, but the header says %d", ErrInvalid, i, n)
			}
			return nil, err
		}
		we = wireEntry{}
		if !parseFast(line, &we.Entry, &strs) {
			we = wireEntry{}
			if err := json.Unmarshal(line, &we); err != nil {
				return nil, fmt.Errorf("%w: entry %d: %w", ErrInvalid, i, err)
			}
		}
		e := &we.Entry
		if err := fromWire(i, &we); err != nil {
			return nil, err
		}
		if len(m.Entries) == cap(m.Entries) && len(m.Entries) >= n/8 {
			m.Entries = slices.Grow(m.Entries, n-len(m.Entries))
		}
		if err := checkEntry(i, e, l); err != nil {
			return nil, err
		}
		if err := b.add(e); err != nil {
			return nil, err
		}
		m.Entries = append(m.Entries, *e)
	}
	// Reading past the last line also makes gzip verify its checksum.
	switch _, err := lr.ReadByte(); {
	case err == nil:
		return nil, fmt.Errorf("%w: data after the %d entries the header announced", ErrInvalid, n)
	case err != io.EOF:
		return nil, decodeErr(err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			return nil, fmt.Errorf("%w: data after the gzip stream", ErrInvalid)
		}
		return nil, decodeErr(err)
	}
	// The totals are known to hold: validate without adding them again.
	if err := m.validate(l, false); err != nil {
		return nil, err
	}
	return m, nil
}

// readLine returns the next line, '\n' included. A stream that ends
// cleanly before it gives io.EOF; one that ends inside it, an error.
func readLine(lr *bufio.Reader, lineNo int, l Limits) ([]byte, error) {
	line, err := lr.ReadSlice('\n')
	switch {
	case err == nil:
		return line, nil
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("%w: line %d is longer than %d bytes", ErrInvalid, lineNo+1, l.MaxLineBytes)
	case err == io.EOF && len(line) == 0:
		if lineNo == 0 {
			return nil, fmt.Errorf("%w: no header", ErrInvalid)
		}
		return nil, io.EOF
	case err == io.EOF:
		return nil, fmt.Errorf("%w: line %d is cut short", ErrInvalid, lineNo+1)
	}
	return nil, decodeErr(err)
}

// decodeErr marks corrupt compressed data as invalid, unlike a failing
// reader.
func decodeErr(err error) error {
	var le *LimitError
	switch {
	case errors.As(err, &le):
		return le
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: truncated: %w", ErrInvalid, err)
	case errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) ||
		errors.As(err, new(flate.CorruptInputError)):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return fmt.Errorf("manifest: %w", err)
}

// fromWire moves the base64 forms into the Entry and normalises what JSON
// cannot tell apart, so that decoding what Encode wrote gives back equal
// entries.
func fromWire(i int, we *wireEntry) error {
	e := &we.Entry
	if we.PathB != nil {
		if e.Path != "" {
			return entryErr(i, e, `both "p" and "pb" are set`)
		}
		e.Path = string(we.PathB)
	}
	if we.TargetB != nil {
		if e.Target != "" {
			return entryErr(i, e, `both "l" and "lb" are set`)
		}
		e.Target = string(we.TargetB)
	}
	for _, x := range we.XattrB {
		name := string(x.N)
		if e.Xattrs == nil {
			e.Xattrs = make(map[string][]byte, len(we.XattrB))
		}
		if _, dup := e.Xattrs[name]; dup {
			return entryErr(i, e, "xattr %q is given twice", trunc(name))
		}
		e.Xattrs[name] = x.V
	}
	if len(e.Xattrs) == 0 {
		e.Xattrs = nil
	}
	for name, v := range e.Xattrs {
		if v == nil {
			e.Xattrs[name] = []byte{}
		}
	}
	return nil
}
