package copier

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/replica"
)

// BenchmarkCopySmallFiles runs the whole path of a background copy of
// many small files over loopback: walk, export, peer service over TLS,
// bulk client, copier, replica. Profile it with -cpuprofile.
func BenchmarkCopySmallFiles(b *testing.B) {
	const files = 5000
	src := b.TempDir()
	var total int64
	for i := range files {
		d := filepath.Join(src, fmt.Sprintf("d%d", i/1000))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		size := 1024 + (i*7919)%7168
		total += int64(size)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), make([]byte, size), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	id, err := peer.LoadOrCreateIdentity(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	token, _, _ := peer.NewToken()
	exp, err := export.Open(context.Background(), "bench", token, src, func(string) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
	reg := export.NewRegistry()
	reg.Add(exp)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := peer.NewServer(reg, id, peer.ServerOptions{}, nil)
	go func() { _ = srv.Serve(l) }() // ends with srv.Close
	defer srv.Close()
	ticket := peer.Ticket{Addr: l.Addr().String(), ExportID: "bench", Token: token, Fingerprint: id.Fingerprint()}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		client, err := peer.NewClient(ticket, peer.ClientOptions{ForceHTTP1: true})
		if err != nil {
			b.Fatal(err)
		}
		rc, err := client.Manifest(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		m, err := manifest.Decode(rc, manifest.DefaultLimits)
		rc.Close()
		if err != nil {
			b.Fatal(err)
		}
		rep, err := replica.Open(b.TempDir(), m)
		if err != nil {
			b.Fatal(err)
		}
		c := New(rep, client, Options{Workers: benchWorkers}, log)
		b.StartTimer()
		if err := c.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rep.Close()
		client.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(files*b.N)/b.Elapsed().Seconds(), "files/s")
}

var benchWorkers = 4

func BenchmarkCopySmallFilesOneWorker(b *testing.B) {
	benchWorkers = 1
	defer func() { benchWorkers = 4 }()
	BenchmarkCopySmallFiles(b)
}
