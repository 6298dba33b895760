package replica

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// BenchmarkOpenHalfCopied opens a replica of 100,000 small files in 10
// directories, half of them in place: what a target plugin restarted in
// the middle of a copy reads before the copy resumes.
func BenchmarkOpenHalfCopied(b *testing.B) {
	const dirs, files = 10, 100_000
	m := &manifest.Manifest{Entries: []manifest.Entry{{Path: ".", Type: manifest.TypeDir, Mode: 0o755, LinkTo: manifest.NoLink, Nlink: 1}}}
	for d := range dirs {
		m.Entries = append(m.Entries, manifest.Entry{Index: len(m.Entries), Path: fmt.Sprintf("d%d", d), Type: manifest.TypeDir,
			Mode: 0o755, LinkTo: manifest.NoLink, Nlink: 1})
		for f := range files / dirs {
			m.Entries = append(m.Entries, manifest.Entry{Index: len(m.Entries), Path: fmt.Sprintf("d%d/f%d", d, d*files/dirs+f),
				Type: manifest.TypeFile, Mode: 0o644, Size: 7, LinkTo: manifest.NoLink, Nlink: 1})
		}
	}
	dir := b.TempDir()
	r, err := Open(dir, m)
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Skeleton(); err != nil {
		b.Fatal(err)
	}
	r.Close()
	for i := range m.Entries {
		if e := &m.Entries[i]; e.Type == manifest.TypeFile && i%2 == 0 {
			if err := os.WriteFile(filepath.Join(dir, "data", e.Path), []byte("content"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	var ru0, ru1 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r, err := Open(dir, m)
		if err != nil {
			b.Fatal(err)
		}
		if f, _ := r.Progress(); f != files/2 {
			b.Fatalf("%d files in place, want %d", f, files/2)
		}
		r.Close()
	}
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(m.Entries)), "ns/entry")
	cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	b.ReportMetric(float64(cpu)/float64(b.N*len(m.Entries)), "cpu-ns/entry")
}
