package manifest

import (
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// Decoding a line with encoding/json took 83% of Decode's CPU in its
// profile (about 3 µs of 4 µs an entry, 4 s for a million files, paid
// while the container is down and again when a restarted target resumes).
// The lines Encode writes have one plain shape, and parseFast reads only
// that shape: known keys, each once, without spaces, integers without
// fraction or exponent, and strings that have neither escapes nor bytes
// that are not UTF-8. It fills the entry exactly as json.Unmarshal would
// from such a line. Anything else, xattrs and the base64 forms included,
// makes it answer false, and Decode gives the line to json.Unmarshal: what
// is accepted, and every error, stay json's.

// fastKey is one key of the plain shape, as a bit of the keys seen.
const (
	keyI = 1 << iota
	keyP
	keyT
	keyM
	keyU
	keyG
	keyS
	keyMT
	keyL
	keyR
	keyH
	keyN
)

// parseFast fills *e (zero on entry) from line, '\n' included, and tells
// whether line had the plain shape. On false, *e is garbage.
func parseFast(line []byte, e *Entry, strs *stringArena) bool {
	n := len(line)
	if n < 3 || line[0] != '{' || line[n-1] != '\n' || line[n-2] != '}' {
		return false
	}
	b := line[1 : n-2] // between the braces
	if len(b) == 0 {
		return false // {} is for json to judge
	}
	var seen uint32
	for {
		// "key":
		if len(b) < 4 || b[0] != '"' {
			return false
		}
		var key uint32
		var rest []byte
		switch {
		case b[2] == '"':
			rest = b[3:]
			switch b[1] {
			case 'i':
				key = keyI
			case 'p':
				key = keyP
			case 't':
				key = keyT
			case 'm':
				key = keyM
			case 'u':
				key = keyU
			case 'g':
				key = keyG
			case 's':
				key = keyS
			case 'l':
				key = keyL
			case 'r':
				key = keyR
			case 'h':
				key = keyH
			case 'n':
				key = keyN
			}
		case len(b) >= 5 && b[1] == 'm' && b[2] == 't' && b[3] == '"':
			key, rest = keyMT, b[4:]
		}
		if key == 0 || seen&key != 0 || len(rest) == 0 || rest[0] != ':' {
			return false
		}
		seen |= key
		b = rest[1:]
		var ok bool
		switch key {
		case keyP, keyL:
			var s string
			if s, b, ok = plainString(b, strs); !ok {
				return false
			}
			if key == keyP {
				e.Path = s
			} else {
				e.Target = s
			}
		default:
			var v uint64
			var neg bool
			if v, neg, b, ok = plainInt(b); !ok {
				return false
			}
			if !setInt(e, key, v, neg) {
				return false
			}
		}
		if len(b) == 0 {
			return true
		}
		if b[0] != ',' {
			return false
		}
		b = b[1:]
	}
}

// plainString reads a JSON string with no escapes and only valid UTF-8,
// whose bytes are then its value.
func plainString(b []byte, strs *stringArena) (string, []byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", nil, false
	}
	ascii := true
	for i := 1; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			s := b[1:i]
			if !ascii && !utf8.Valid(s) {
				return "", nil, false // json would put U+FFFD in place
			}
			return strs.make(s), b[i+1:], true
		case c == '\\' || c < 0x20:
			return "", nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", nil, false
}

// plainInt reads a JSON integer: an optional '-', then "0" or a digit
// 1-9 and more digits, at most 19 of them (less than 2^63, so no
// overflow here; the field's own range is checked by setInt).
func plainInt(b []byte) (v uint64, neg bool, rest []byte, ok bool) {
	i := 0
	if len(b) > 0 && b[0] == '-' {
		neg, i = true, 1
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if i-start == 19 {
			return 0, false, nil, false
		}
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	digits := i - start
	if digits == 0 || (b[start] == '0' && (digits > 1 || neg)) {
		return 0, false, nil, false // none, a leading zero, or -0
	}
	return v, neg, b[i:], true
}

// setInt stores v (negated if neg) in e's field for key, as json.Unmarshal
// would, and answers false where json would refuse the value for the
// field's type.
func setInt(e *Entry, key uint32, v uint64, neg bool) bool {
	switch key {
	case keyI, keyS, keyMT, keyH: // signed 64-bit (int is 64-bit where cargo runs)
		if v > 1<<63-1 || strconv.IntSize != 64 {
			return false
		}
		x := int64(v)
		if neg {
			x = -x
		}
		switch key {
		case keyI:
			e.Index = int(x)
		case keyS:
			e.Size = x
		case keyMT:
			e.MtimeNs = x
		case keyH:
			e.LinkTo = int(x)
		}
		return true
	}
	if neg {
		return false
	}
	switch key {
	case keyT:
		if v > 0xff {
			return false
		}
		e.Type = Type(v)
	case keyR:
		e.Rdev = v
	default: // the uint32 fields
		if v > 0xffffffff {
			return false
		}
		x := uint32(v)
		switch key {
		case keyM:
			e.Mode = x
		case keyU:
			e.UID = x
		case keyG:
			e.GID = x
		case keyN:
			e.Nlink = x
		}
	}
	return true
}

// stringArena makes the decoded paths and targets out of a few large
// blocks rather than one allocation each: a manifest's strings live and
// die with it, and a million separate ones cost the allocator and the GC
// about a tenth of Decode.
type stringArena struct {
	block []byte
}

const arenaBlock = 64 << 10

func (a *stringArena) make(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > arenaBlock/8 {
		return string(b)
	}
	if cap(a.block)-len(a.block) < len(b) {
		a.block = make([]byte, 0, arenaBlock)
	}
	start := len(a.block)
	a.block = append(a.block, b...)
	return unsafeString(a.block[start:])
}

func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// appendPlain appends e's line as json.Encoder (without HTML escaping)
// writes it, for an entry whose line parseFast reads: no xattrs, and a
// path and target that need no escapes. It answers false, appending
// nothing, for any other entry. encoding/json took 0.5 µs an entry here,
// most of Encode's time.
func appendPlain(buf []byte, e *Entry) ([]byte, bool) {
	if len(e.Xattrs) > 0 || !plainJSON(e.Path) || !plainJSON(e.Target) {
		return buf, false
	}
	buf = append(buf, `{"i":`...)
	buf = strconv.AppendInt(buf, int64(e.Index), 10)
	buf = append(buf, `,"p":"`...)
	buf = append(buf, e.Path...)
	buf = append(buf, `","t":`...)
	buf = strconv.AppendUint(buf, uint64(e.Type), 10)
	buf = append(buf, `,"m":`...)
	buf = strconv.AppendUint(buf, uint64(e.Mode), 10)
	buf = append(buf, `,"u":`...)
	buf = strconv.AppendUint(buf, uint64(e.UID), 10)
	buf = append(buf, `,"g":`...)
	buf = strconv.AppendUint(buf, uint64(e.GID), 10)
	if e.Size != 0 {
		buf = append(buf, `,"s":`...)
		buf = strconv.AppendInt(buf, e.Size, 10)
	}
	buf = append(buf, `,"mt":`...)
	buf = strconv.AppendInt(buf, e.MtimeNs, 10)
	if e.Target != "" {
		buf = append(buf, `,"l":"`...)
		buf = append(buf, e.Target...)
		buf = append(buf, '"')
	}
	if e.Rdev != 0 {
		buf = append(buf, `,"r":`...)
		buf = strconv.AppendUint(buf, e.Rdev, 10)
	}
	buf = append(buf, `,"h":`...)
	buf = strconv.AppendInt(buf, int64(e.LinkTo), 10)
	buf = append(buf, `,"n":`...)
	buf = strconv.AppendUint(buf, uint64(e.Nlink), 10)
	buf = append(buf, "}\n"...)
	return buf, true
}

// plainJSON tells whether json writes s as its bytes between quotes:
// valid UTF-8 without '"', '\\', control characters, or U+2028 and U+2029
// (which json escapes for JavaScript's sake).
func plainJSON(s string) bool {
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
		if c >= utf8.RuneSelf {
			ascii = false
			if c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9) {
				return false
			}
		}
	}
	return ascii || utf8.ValidString(s)
}
