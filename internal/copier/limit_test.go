package copier

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/replica"
)

// memExport serves files from memory through the real peer server, at
// the pace of a network link, so that requests overlap as they do over a
// real network: each request waits a little, then sends at bytesPerSec.
type memExport struct {
	hash        [32]byte
	files       map[int][]byte
	delay       time.Duration
	bytesPerSec int64
}

func (e *memExport) TokenHash() [32]byte { return e.hash }

func (e *memExport) WriteManifest(_ context.Context, w io.Writer) error {
	_, err := io.WriteString(w, "unused\n")
	return err
}

func (e *memExport) Open(ctx context.Context, index int) (peer.File, error) {
	b, ok := e.files[index]
	if !ok {
		return nil, fmt.Errorf("no file %d", index)
	}
	select {
	case <-time.After(e.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return memFile{Reader: bytes.NewReader(b), bytesPerSec: e.bytesPerSec}, nil
}

func (e *memExport) Complete(context.Context, string) error { return nil }

type memFile struct {
	*bytes.Reader
	bytesPerSec int64
}

func (f memFile) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(time.Duration(int64(len(p)) * int64(time.Second) / f.bytesPerSec))
	return f.Reader.ReadAt(p, off)
}

func (memFile) Close() error { return nil }

type oneExport struct {
	id  string
	exp *memExport
}

func (o oneExport) Lookup(id string) (peer.Export, bool) {
	if id != o.id {
		return nil, false
	}
	return o.exp, true
}

// servePeer runs the real peer server on loopback (it answers 429 beyond
// its 16 requests in flight per export) and returns a ticket to content.
func servePeer(t *testing.T, content map[int][]byte) peer.Ticket {
	t.Helper()
	token, hash, err := peer.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	exp := &memExport{hash: hash, files: content, delay: 20 * time.Millisecond, bytesPerSec: 4 << 20}
	srv := peer.NewServer(oneExport{id: "e1", exp: exp}, id, peer.ServerOptions{}, nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return peer.Ticket{Addr: l.Addr().String(), ExportID: "e1", Token: token, Fingerprint: id.Fingerprint()}
}

// newLargeFixture makes a manifest of small files and one large file of
// chunks chunks, last in the manifest, and returns the large file's index.
func newLargeFixture(t *testing.T, small, chunks int) (*fixture, int) {
	f := &fixture{dir: t.TempDir(), m: &manifest.Manifest{}, src: &fakeSource{content: map[int][]byte{}, wholes: map[int]int{}, chunks: map[[2]int]int{}}}
	add := func(p string, typ manifest.Type, size int64) int {
		i := len(f.m.Entries)
		f.m.Entries = append(f.m.Entries, manifest.Entry{Index: i, Path: p, Type: typ, Mode: 0o644, Size: size, LinkTo: manifest.NoLink, Nlink: 1, MtimeNs: 1e18})
		if typ == manifest.TypeFile {
			b := make([]byte, size)
			_, _ = rand.Read(b)
			f.src.content[i] = b
		}
		return i
	}
	add(".", manifest.TypeDir, 0)
	for i := range small {
		add(fmt.Sprintf("f%04d", i), manifest.TypeFile, int64(1000+i*37%5000))
	}
	return f, add("db", manifest.TypeFile, int64(chunks)*replica.ChunkSize-123)
}

// A database opening a large file reads many parts of it at once, while
// the background copy runs: every read waits its turn for the source and
// gets its bytes, however many the source would answer at once.
func TestManyReadsAtOnceWaitForTheSource(t *testing.T) {
	f, big := newLargeFixture(t, 200, 16)
	tk := servePeer(t, f.src.content)
	var retries atomic.Int64
	client := func(opts peer.ClientOptions) *peer.Client {
		opts.RetryMax = 3 // as the driver's bulk client
		opts.OnRetry = func(error) { retries.Add(1) }
		c, err := peer.NewClient(tk, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	bulk, demand := client(peer.ClientOptions{ForceHTTP1: true}), client(peer.ClientOptions{})
	r, err := replica.Open(f.dir, f.m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c := New(r, bulk, Options{Demand: demand, BatchFiles: 20, Permanent: func(err error) bool {
		return errors.Is(err, peer.ErrUnauthorized) || errors.Is(err, peer.ErrExportGone)
	}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(c.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := make(chan error, 1)
	go func() { run <- c.Run(ctx) }()

	const reads = 64
	want := f.src.content[big]
	span := int64(len(want)) / reads
	var wg sync.WaitGroup
	errs := make(chan error, reads)
	for k := range reads {
		wg.Go(func() {
			off := int64(k)*span + 777
			p := make([]byte, 128<<10)
			n, err := c.ReadAt(ctx, big, p, off)
			switch {
			case err != nil && !errors.Is(err, io.EOF):
				errs <- fmt.Errorf("read %d at %d: %w", k, off, err)
			case n != len(p) || !bytes.Equal(p, want[off:off+int64(n)]):
				errs <- fmt.Errorf("read %d at %d: %d bytes, not the file's", k, off, n)
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 3 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d reads failed", failed, reads)
	}
	if err := <-run; err != nil {
		t.Fatal(err)
	}
	f.verifyContent(t)
	t.Logf("the clients retried %d times", retries.Load())
}

// A free slot goes to a waiting read before any transfer, and transfers
// never take the slots reads need.
func TestLimiterServesReadsFirst(t *testing.T) {
	ctx := context.Background()
	l := newLimiter(6) // transfers: 2 of each class at most
	var held []func()
	take := func(cl class) {
		t.Helper()
		release, err := l.acquire(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, release)
	}
	take(forBackground)
	take(forBackground)
	take(forReadAhead)
	take(forReadAhead)
	// Transfers beyond their share wait; reads do not.
	waiting := func(cl class) (<-chan func(), context.CancelFunc) {
		ctx, cancel := context.WithCancel(ctx)
		got := make(chan func(), 1)
		go func() {
			if release, err := l.acquire(ctx, cl); err == nil {
				got <- release
			}
		}()
		return got, cancel
	}
	bg, cancelBG := waiting(forBackground)
	defer cancelBG()
	take(forRead)
	take(forRead)
	// Full: a read waits too, and gets the next slot a transfer frees.
	rd, cancelRead := waiting(forRead)
	defer cancelRead()
	until(t, "a read queues", func() bool { return l.queued(forRead) == 1 })
	held[0]() // a background transfer ends
	release := wait(t, "the waiting read", rd)
	select {
	case <-bg:
		t.Fatal("a background transfer went before a read")
	case <-time.After(20 * time.Millisecond):
	}
	release()
	lastBG := wait(t, "the waiting background transfer", bg)
	// A waiter that gives up leaves no trace.
	rd2, cancelRead2 := waiting(forRead)
	until(t, "a read queues", func() bool { return l.queued(forRead) == 1 })
	cancelRead2()
	until(t, "a cancelled read leaves the queue", func() bool { return l.queued(forRead) == 0 })
	select {
	case <-rd2:
		t.Fatal("a cancelled waiter got a slot")
	default:
	}
	for _, r := range held[1:] {
		r()
	}
	l.mu.Lock()
	n := l.inflight
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d slots held, want the last background transfer's", n)
	}
	lastBG()
}

func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never", what)
		}
	}
}

// A read waits while the source fails, and fails only once it is gone
// for good.
func TestReadsWaitForTheSource(t *testing.T) {
	f := newFixture(t, 20)
	f.src.failNext = 4
	c, _ := f.copier(t, Options{})
	big := len(f.m.Entries) - 4
	buf := make([]byte, 10)
	n, err := c.ReadAt(context.Background(), big, buf, 5)
	if err != nil || n != 10 || !bytes.Equal(buf, f.src.content[big][5:15]) {
		t.Fatalf("read through a failing source: %d %v", n, err)
	}
	n, err = c.ReadAt(context.Background(), 3, buf, 0) // d/f0001, 37 bytes
	if err != nil || n != 10 || !bytes.Equal(buf, f.src.content[3][:10]) {
		t.Fatalf("read of a small file: %d %v", n, err)
	}
	f.src.mu.Lock()
	f.src.permanent = true
	f.src.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.ReadAt(ctx, big, buf, 2*replica.ChunkSize+5); !errors.Is(err, errGone) {
		t.Fatalf("read with the export gone: %v", err)
	}
	if _, err := c.ReadAt(ctx, 4, buf, 0); !errors.Is(err, errGone) {
		t.Fatalf("read of a small file with the export gone: %v", err)
	}
}
