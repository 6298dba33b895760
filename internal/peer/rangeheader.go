package peer

import (
	"strconv"
	"strings"
)

// parseRange parses one "bytes=" range (first-last, first- or -suffix) for a
// file of size bytes. Multiple ranges are not supported (the client never
// sends them) and are rejected like unsatisfiable ones.
func parseRange(spec string, size int64) (start, length int64, ok bool) {
	spec, found := strings.CutPrefix(spec, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false
	}
	if first == "" { // suffix: the last N bytes
		n, ok := parseDecimal(last)
		if !ok || n == 0 || size == 0 {
			return 0, 0, false
		}
		n = min(n, size)
		return size - n, n, true
	}
	a, ok := parseDecimal(first)
	if !ok || a >= size {
		return 0, 0, false
	}
	end := size - 1
	if last != "" {
		b, ok := parseDecimal(last)
		if !ok || b < a {
			return 0, 0, false
		}
		end = min(b, end)
	}
	return a, end - a + 1, true
}

// parseContentRange parses "bytes FIRST-LAST/TOTAL".
func parseContentRange(s string) (first, last, total int64, ok bool) {
	s, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var ok1, ok2, ok3 bool
	first, ok1 = parseDecimal(a)
	last, ok2 = parseDecimal(b)
	total, ok3 = parseDecimal(tot)
	if !ok1 || !ok2 || !ok3 || first > last || last >= total {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// parseUnsatisfiedRange parses "bytes */TOTAL".
func parseUnsatisfiedRange(s string) (int64, bool) {
	tot, found := strings.CutPrefix(s, "bytes */")
	if !found {
		return 0, false
	}
	return parseDecimal(tot)
}

func parseDecimal(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}
