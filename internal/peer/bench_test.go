package peer

import (
	"context"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// BenchmarkBatchSmallFiles moves 10,000 files of 4 KiB per operation in
// batches of DefaultMaxBatchFiles over loopback TLS.
func BenchmarkBatchSmallFiles(b *testing.B) { benchProtocols(b, benchBatchSmallFiles) }

func benchBatchSmallFiles(b *testing.B, forceHTTP1 bool) {
	const nFiles, fileSize = 10000, 4 << 10
	r := rand.New(rand.NewPCG(7, 8))
	files := make([][]byte, nFiles)
	indexes := make([]int, nFiles)
	for i := range files {
		files[i] = randomBytes(r, fileSize)
		indexes[i] = i
	}
	exp, token := newMemExport(b, files)
	ts := startServer(b, memExports{"e1": exp}, ServerOptions{}, nil)
	c := newTestClient(b, ts.ticket("e1", token), ClientOptions{ForceHTTP1: forceHTTP1})
	ctx := context.Background()
	buf := make([]byte, 64<<10)

	b.SetBytes(nFiles * fileSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for b.Loop() {
		err := c.Batch(ctx, indexes, func(_ int, _ int64, rd io.Reader) error {
			_, err := io.CopyBuffer(io.Discard, rd, buf)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b, nFiles*fileSize)
	b.ReportMetric(float64(b.N*nFiles)/b.Elapsed().Seconds(), "files/s")
}

// BenchmarkReadRangeLarge reads one 256 MiB file per operation.
func BenchmarkReadRangeLarge(b *testing.B) { benchProtocols(b, benchReadRangeLarge) }

func benchReadRangeLarge(b *testing.B, forceHTTP1 bool) {
	const size = 256 << 20
	r := rand.New(rand.NewPCG(9, 10))
	data := randomBytes(r, size)
	exp, token := newMemExport(b, [][]byte{data})
	ts := startServer(b, memExports{"e1": exp}, ServerOptions{}, nil)
	c := newTestClient(b, ts.ticket("e1", token), ClientOptions{ForceHTTP1: forceHTTP1})
	ctx := context.Background()

	b.SetBytes(size)
	b.ResetTimer()
	cpu := startCPU()
	for b.Loop() {
		n, err := c.ReadRange(ctx, 0, 0, -1, io.Discard)
		if err != nil || n != size {
			b.Fatal(n, err)
		}
	}
	cpu.report(b, size)
}

// BenchmarkReadRangeParallel reads 4 MiB ranges of a 64 MiB file from 8
// goroutines, as the on-demand reader and background copier do at once.
func BenchmarkReadRangeParallel(b *testing.B) { benchProtocols(b, benchReadRangeParallel) }

func benchReadRangeParallel(b *testing.B, forceHTTP1 bool) {
	const size, chunk = 64 << 20, 4 << 20
	r := rand.New(rand.NewPCG(11, 12))
	data := randomBytes(r, size)
	exp, token := newMemExport(b, [][]byte{data})
	ts := startServer(b, memExports{"e1": exp}, ServerOptions{}, nil)
	c := newTestClient(b, ts.ticket("e1", token), ClientOptions{ForceHTTP1: forceHTTP1})
	ctx := context.Background()

	b.SetBytes(chunk)
	b.SetParallelism(2) // 2 × GOMAXPROCS goroutines
	b.ResetTimer()
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			off := int64(i%(size/chunk)) * chunk
			i++
			if n, err := c.ReadRange(ctx, 0, off, chunk, io.Discard); err != nil || n != chunk {
				b.Error(n, err)
				return
			}
		}
	})
	cpu.report(b, chunk)
}

// BenchmarkReadRangeRTT50ms reads 64 MiB through a proxy adding 50 ms of
// round-trip time: throughput is then bounded by the HTTP/2 stream receive
// window (window / RTT), which is what clientStreamWindow is tuned for.
func BenchmarkReadRangeRTT50ms(b *testing.B) { benchProtocols(b, benchReadRangeRTT50ms) }

func benchReadRangeRTT50ms(b *testing.B, forceHTTP1 bool) {
	const size = 64 << 20
	r := rand.New(rand.NewPCG(13, 14))
	data := randomBytes(r, size)
	exp, token := newMemExport(b, [][]byte{data})
	ts := startServer(b, memExports{"e1": exp}, ServerOptions{}, nil)
	tk := ts.ticket("e1", token)
	tk.Addr = delayProxy(b, ts.addr, 25*time.Millisecond)
	c := newTestClient(b, tk, ClientOptions{ForceHTTP1: forceHTTP1})
	ctx := context.Background()

	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		n, err := c.ReadRange(ctx, 0, 0, -1, io.Discard)
		if err != nil || n != size {
			b.Fatal(n, err)
		}
	}
}

// cpuMeter reports process CPU time (user+system, both ends of the
// connection) per GiB moved: unlike MB/s it is meaningful on a busy machine.
type cpuMeter struct{ start time.Duration }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{cpuTime()} }

func (m cpuMeter) report(b *testing.B, bytesPerOp int64) {
	total := float64(bytesPerOp) * float64(b.N)
	b.ReportMetric((cpuTime()-m.start).Seconds()/(total/(1<<30)), "cpu-s/GiB")
}

func benchProtocols(b *testing.B, f func(b *testing.B, forceHTTP1 bool)) {
	b.Run("h2", func(b *testing.B) { f(b, false) })
	b.Run("h1", func(b *testing.B) { f(b, true) })
}
