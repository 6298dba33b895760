package replica

import (
	"crypto/rand"
	"sync"
	"testing"

	"github.com/cargo-migrate/cargo/internal/manifest"
)

// benchChunks fills one large file of b.N chunks (at least two, so it is
// large) with workers writing chunks at once, as the copier's background
// workers do: write the chunk's bytes, then MarkChunk. The last chunk
// commits the file, so the figure includes the commit.
func benchChunks(b *testing.B, workers int) {
	chunks := max(b.N, 2)
	m := &manifest.Manifest{Entries: []manifest.Entry{
		{Index: 0, Path: ".", Type: manifest.TypeDir, Mode: 0o755, LinkTo: manifest.NoLink, Nlink: 1},
		{Index: 1, Path: "big", Type: manifest.TypeFile, Mode: 0o644, Size: int64(chunks) * ChunkSize, LinkTo: manifest.NoLink, Nlink: 1},
	}}
	r, err := Open(b.TempDir(), m)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, ChunkSize)
	if _, err := rand.Read(buf); err != nil {
		b.Fatal(err)
	}
	p, err := r.Partial(1)
	if err != nil {
		b.Fatal(err)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	b.SetBytes(ChunkSize)
	b.ResetTimer()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				off, n := p.Range(c)
				if _, err := p.WriterAt().WriteAt(buf[:n], off); err != nil {
					b.Error(err)
					return
				}
				if err := p.MarkChunk(c); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for c := range chunks {
		next <- c
	}
	close(next)
	wg.Wait()
	b.StopTimer()
	if !r.Done(1) {
		b.Fatal("the file is not complete")
	}
}

func BenchmarkChunks1Worker(b *testing.B)  { benchChunks(b, 1) }
func BenchmarkChunks4Workers(b *testing.B) { benchChunks(b, 4) }
