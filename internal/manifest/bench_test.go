package manifest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// cpuTime is the process's user and system CPU time so far: on a machine
// shared with other work, wall time per op varies with the load, CPU time
// much less.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// perEntry reports wall and CPU time per entry of the loop that began at
// CPU time cpu0, over n entries an op.
func perEntry(b *testing.B, cpu0 int64, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/entry")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*n), "cpu-ns/entry")
}

// BenchmarkWalk walks 20,000 small files in 200 directories.
func BenchmarkWalk(b *testing.B) {
	dir := b.TempDir()
	for d := range 200 {
		sub := filepath.Join(dir, fmt.Sprintf("dir%03d", d))
		must(b, os.Mkdir(sub, 0o755))
		for f := range 100 {
			must(b, os.WriteFile(filepath.Join(sub, fmt.Sprintf("file%03d.txt", f)), []byte("content"), 0o644))
		}
	}
	root, err := os.OpenRoot(dir)
	must(b, err)
	defer root.Close()
	var n int
	cpu0 := cpuTime()
	for b.Loop() {
		m, err := Walk(context.Background(), root)
		must(b, err)
		n = len(m.Entries)
	}
	perEntry(b, cpu0, n)
}

// synthetic builds a valid manifest of about n entries shaped like a real
// tree: directories of 100 files with longish names.
func synthetic(n int) *Manifest {
	m := &Manifest{Entries: make([]Entry, 0, n)}
	m.Entries = append(m.Entries, Entry{Path: ".", Type: TypeDir, Mode: 0o755, LinkTo: NoLink, Nlink: 1})
	for d := 0; len(m.Entries) < n; d++ {
		dp := fmt.Sprintf("usr/share/package-%05d", d)
		if d == 0 {
			m.Entries = append(m.Entries,
				Entry{Index: 1, Path: "usr", Type: TypeDir, Mode: 0o755, LinkTo: NoLink, Nlink: 1},
				Entry{Index: 2, Path: "usr/share", Type: TypeDir, Mode: 0o755, LinkTo: NoLink, Nlink: 1})
		}
		m.Entries = append(m.Entries, Entry{Index: len(m.Entries), Path: dp, Type: TypeDir, Mode: 0o755, MtimeNs: 1700000000123456789, LinkTo: NoLink, Nlink: 1})
		for f := 0; f < 100 && len(m.Entries) < n; f++ {
			m.Entries = append(m.Entries, Entry{
				Index: len(m.Entries), Path: fmt.Sprintf("%s/file-%03d.data", dp, f), Type: TypeFile,
				Mode: 0o644, UID: 1000, GID: 1000, Size: int64(f * 1000), MtimeNs: 1700000000123456789,
				LinkTo: NoLink, Nlink: 1,
			})
		}
	}
	return m
}

func BenchmarkEncode(b *testing.B) {
	m := synthetic(100_000)
	var buf bytes.Buffer
	cpu0 := cpuTime()
	for b.Loop() {
		buf.Reset()
		must(b, Encode(&buf, m))
	}
	perEntry(b, cpu0, len(m.Entries))
	b.ReportMetric(float64(buf.Len())/float64(len(m.Entries)), "gzip-bytes/entry")
}

func BenchmarkDecode(b *testing.B) {
	m := synthetic(100_000)
	var buf bytes.Buffer
	must(b, Encode(&buf, m))
	enc := buf.Bytes()
	b.SetBytes(int64(len(enc)))
	cpu0 := cpuTime()
	for b.Loop() {
		_, err := Decode(bytes.NewReader(enc), DefaultLimits)
		must(b, err)
	}
	perEntry(b, cpu0, len(m.Entries))
}

func BenchmarkValidate(b *testing.B) {
	m := synthetic(100_000)
	cpu0 := cpuTime()
	for b.Loop() {
		must(b, m.Validate(DefaultLimits))
	}
	perEntry(b, cpu0, len(m.Entries))
}

func BenchmarkIndex(b *testing.B) {
	m := synthetic(100_000)
	cpu0 := cpuTime()
	for b.Loop() {
		_, err := buildTree(m)
		must(b, err)
	}
	perEntry(b, cpu0, len(m.Entries))
}

// BenchmarkWalkWide walks 100,000 small files in 10 directories, the
// shape of tests/federation's scale test, where each directory is large
// enough to be stat'ed by several listers at once.
func BenchmarkWalkWide(b *testing.B) {
	dir := b.TempDir()
	for d := range 10 {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", d))
		must(b, os.Mkdir(sub, 0o755))
		for f := range 10_000 {
			must(b, os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", d*10_000+f)), []byte("content"), 0o644))
		}
	}
	root, err := os.OpenRoot(dir)
	must(b, err)
	defer root.Close()
	var n int
	cpu0 := cpuTime()
	for b.Loop() {
		m, err := Walk(context.Background(), root)
		must(b, err)
		n = len(m.Entries)
	}
	perEntry(b, cpu0, n)
}
