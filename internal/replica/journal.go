package replica

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
)

// A large file's chunk log is a header, then one record per chunk whose
// bytes are on disk: the chunk number (uint32, big-endian) and its CRC-32C.
// The checksum lets a reader tell a record from a torn one, or from zeros
// a power cut left where the log had grown. Logs of older versions are
// bare 4-byte chunk numbers, without header.
const (
	logMagic  = "cargo\x00j1"
	recordLen = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendRecord(b []byte, c int) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(c))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[len(b)-4:], castagnoli))
}

// parseLog reads the log of a file of n chunks. It keeps the records up
// to the first that is torn, fails its checksum or names no chunk of the
// file: after a crash or a power cut nothing after it can be trusted.
// clean says b is exactly a header and the records kept, so that appending
// to it is safe.
func parseLog(b []byte, n int) (chunks map[int]bool, clean bool) {
	chunks = map[int]bool{}
	switch {
	case len(b) < len(logMagic) && strings.HasPrefix(logMagic, string(b)):
		return chunks, false // new, or its header torn
	case strings.HasPrefix(string(b), logMagic):
		off := len(logMagic)
		for ; off+recordLen <= len(b); off += recordLen {
			c := binary.BigEndian.Uint32(b[off:])
			if c >= uint32(n) || binary.BigEndian.Uint32(b[off+4:]) != crc32.Checksum(b[off:off+4], castagnoli) {
				break
			}
			chunks[int(c)] = true
		}
		return chunks, off == len(b)
	default: // an older version's
		for off := 0; off+4 <= len(b); off += 4 {
			c := binary.BigEndian.Uint32(b[off:])
			if c >= uint32(n) {
				break
			}
			chunks[int(c)] = true
		}
		return chunks, false
	}
}

// readLog reads large file i's log; a missing log holds no chunk.
func readLog(root *os.Root, i, n int) (map[int]bool, bool, error) {
	b, err := root.ReadFile(partialPath(i, ".log"))
	if errors.Is(err, fs.ErrNotExist) {
		return map[int]bool{}, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	chunks, clean := parseLog(b, n)
	return chunks, clean, nil
}

// openLog opens large file i's log for appending. A log that is not clean
// is first rewritten as a header and the chunks given: a temporary file,
// synced, then renamed over the log, so that a log always starts with a
// header on disk (zeros a power cut left there would otherwise read as an
// older version's records of chunk 0).
func openLog(root *os.Root, i int, chunks map[int]bool, clean bool) (*os.File, error) {
	if !clean {
		b := []byte(logMagic)
		for _, c := range slices.Sorted(maps.Keys(chunks)) {
			b = appendRecord(b, c)
		}
		if err := writeSynced(root, partialPath(i, ".log.tmp"), b); err != nil {
			return nil, err
		}
		if err := root.Rename(partialPath(i, ".log.tmp"), partialPath(i, ".log")); err != nil {
			return nil, err
		}
	}
	return root.OpenFile(partialPath(i, ".log"), os.O_WRONLY|os.O_APPEND, 0)
}

func writeSynced(root *os.Root, name string, b []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
