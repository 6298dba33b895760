package manifest

import (
	"fmt"
	"io"
	"math"
)

// Limits bounds what Decode and Validate accept from a peer. A zero or
// negative field means the DefaultLimits value, so Limits{} is safe.
//
// The per-entry limits keep one line cheap; the totals keep the whole
// manifest cheap, so that a small gzip stream cannot ask for gigabytes.
type Limits struct {
	// MaxEntries is the most entries one manifest may have; never more
	// than math.MaxInt32-1, which a Tree can index.
	MaxEntries int
	// MaxPathLen is the most bytes one entry's path may have.
	MaxPathLen int
	// MaxXattrBytes is the most bytes of xattr names plus values one entry
	// may carry. Names count too: otherwise many empty values would be free.
	MaxXattrBytes int
	// MaxLineBytes is the most bytes one encoded line may have, newline
	// included; Decode's line buffer is this big.
	MaxLineBytes int

	// MaxBytes is the most bytes the decompressed stream may have, header
	// and every line included. It bounds what a small gzip stream can
	// expand to (deflate reaches about 1000:1), and so Decode's work. The
	// compressed input is held to the same bound: a gzip stream of JSON
	// lines is always smaller than what it holds, and empty deflate blocks
	// would otherwise let a stream be endless without expanding at all.
	MaxBytes int64
	// MaxTotalPathBytes is the most bytes of paths plus symlink targets of
	// all entries together, as Decode holds them in memory.
	MaxTotalPathBytes int64
	// MaxTotalXattrBytes is the most bytes of xattrs of all entries
	// together, as Decode holds them in memory: each xattr counts its name,
	// its value and XattrOverhead, and each entry with xattrs
	// XattrMapOverhead for its map, so that many tiny ones are not free
	// either.
	MaxTotalXattrBytes int64
	// MaxTotalXattrs is the most xattrs of all entries together: decoding
	// costs about 2 µs each, so this bounds the time a manifest of many
	// tiny ones takes to refuse, within the engine's 30 s for a create.
	MaxTotalXattrs int64
}

// What MaxTotalXattrBytes counts beyond names and values: about what Go
// spends on an entry's xattr map (a small map is one group of eight
// slots) and on each xattr's slot, headers and allocation rounding. 144
// is what a decode of maps of thousands of tiny xattrs measured (about
// 140 bytes each in the heap); 48 let a hostile manifest within the
// limit take 2.7 GiB.
const (
	XattrMapOverhead = 384
	XattrOverhead    = 144
)

// DefaultLimits fits any tree a Linux filesystem can hold in practice
// (PATH_MAX paths, 64 KiB xattr values) while keeping one entry's memory
// small, and volumes of millions of files while keeping a whole
// manifest's memory to about 2.3 GiB at worst (MaxEntries entries at about
// 130 bytes each with their Tree index, plus the path and xattr totals),
// where the per-entry limits alone allowed tens of GiB.
//
// A real volume of 1,000,000 files (TestDefaultLimitsFitAMillionFiles:
// 10,000 directories of 100 files, paths of 89 bytes on average, and a
// 14-byte-named, 40-byte xattr on every file and directory, as Samba's
// user.DOSATTRIB is) has 1,010,003 entries, decompresses to 257 MiB and
// counts 86 MiB of paths and 559 MiB of xattrs; it decodes to about
// 660 MiB of memory, 210 MiB without the xattrs. The defaults leave four
// times that for entries and MaxBytes, six times for paths (or room for
// paths of 500 bytes on average) and over twice for xattrs.
var DefaultLimits = Limits{
	MaxEntries:    4_000_000,
	MaxPathLen:    4096,
	MaxXattrBytes: 256 << 10,
	MaxLineBytes:  1 << 20,

	MaxBytes:           1 << 30,
	MaxTotalPathBytes:  512 << 20,
	MaxTotalXattrBytes: 5 << 28, // 1.25 GiB
	MaxTotalXattrs:     4_000_000,
}

// Fixed bounds, from Linux: NAME_MAX for a path component and an xattr
// name, PATH_MAX for a symlink target.
const (
	MaxNameLen   = 255
	MaxTargetLen = 4096
)

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def64 := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxEntries, DefaultLimits.MaxEntries)
	def(&l.MaxPathLen, DefaultLimits.MaxPathLen)
	def(&l.MaxXattrBytes, DefaultLimits.MaxXattrBytes)
	def(&l.MaxLineBytes, DefaultLimits.MaxLineBytes)
	def64(&l.MaxBytes, DefaultLimits.MaxBytes)
	def64(&l.MaxTotalPathBytes, DefaultLimits.MaxTotalPathBytes)
	def64(&l.MaxTotalXattrBytes, DefaultLimits.MaxTotalXattrBytes)
	def64(&l.MaxTotalXattrs, DefaultLimits.MaxTotalXattrs)
	// The Tree keeps indices in int32; consumers add one for an inode
	// number.
	l.MaxEntries = min(l.MaxEntries, math.MaxInt32-1)
	return l
}

// LimitError says a manifest is over one of its Limits as a whole. No
// real volume cargo can move needs that much, so the source is broken or
// hostile. It matches ErrInvalid.
type LimitError struct {
	// Limit is the Limits field that was exceeded, such as "MaxBytes".
	Limit string
	// What went over, in words: "the bytes of xattrs of all entries".
	What string
	Max  int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s: over the limit of %d for %s (%s): refused, as a source that sends this much "+
		"is broken or hostile; use tickets only from hosts you trust, and move a volume this large another way",
		ErrInvalid, e.Max, e.What, e.Limit)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *LimitError) Is(target error) bool { return target == ErrInvalid }

// budget adds up what the entries of one manifest take against the totals
// of Limits.
type budget struct {
	l             *Limits
	paths, xattrs int64
	nxattrs       int64
}

// add charges e, which passed checkEntry, and says if a total is exceeded.
func (b *budget) add(e *Entry) error {
	b.paths += int64(len(e.Path) + len(e.Target))
	if b.paths > b.l.MaxTotalPathBytes {
		return &LimitError{Limit: "MaxTotalPathBytes", What: "the bytes of paths and symlink targets of all entries",
			Max: b.l.MaxTotalPathBytes}
	}
	if len(e.Xattrs) > 0 {
		b.xattrs += XattrMapOverhead
		for name, v := range e.Xattrs {
			b.xattrs += int64(len(name) + len(v) + XattrOverhead)
		}
	}
	b.nxattrs += int64(len(e.Xattrs))
	if b.nxattrs > b.l.MaxTotalXattrs {
		return &LimitError{Limit: "MaxTotalXattrs", What: "the xattrs of all entries", Max: b.l.MaxTotalXattrs}
	}
	if b.xattrs > b.l.MaxTotalXattrBytes {
		return &LimitError{Limit: "MaxTotalXattrBytes", What: "the bytes of xattrs of all entries",
			Max: b.l.MaxTotalXattrBytes}
	}
	return nil
}

// capReader passes on at most max bytes of r and fails with over, not
// io.EOF, if r has more: a stream cut at the bound must not look whole.
type capReader struct {
	r    io.Reader
	left int64
	over *LimitError
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// At the bound: fine if r ends here.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, c.over
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
