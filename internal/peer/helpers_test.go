package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memFile is a File over a byte slice; claimSize lets a test pretend the
// file is larger than it is (it "shrank" after open).
type memFile struct {
	data      []byte
	claimSize int64
	closed    *atomic.Int64
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Size() int64 {
	if f.claimSize > 0 {
		return f.claimSize
	}
	return int64(len(f.data))
}

func (f *memFile) Close() error {
	if f.closed != nil {
		f.closed.Add(1)
	}
	return nil
}

type memExport struct {
	hash     [32]byte
	manifest []byte
	files    [][]byte
	shrunk   map[int]int64 // index -> claimed size larger than the data
	openErr  map[int]error
	// openHook, if set, runs at the start of Open (used to block requests).
	openHook func(ctx context.Context, index int)
	closed   atomic.Int64
	opened   atomic.Int64

	mu      sync.Mutex
	reports []string
}

func (e *memExport) TokenHash() [32]byte { return e.hash }

func (e *memExport) WriteManifest(_ context.Context, w io.Writer) error {
	if e.manifest == nil {
		return errors.New("manifest not ready")
	}
	_, err := w.Write(e.manifest)
	return err
}

func (e *memExport) Open(ctx context.Context, index int) (File, error) {
	if e.openHook != nil {
		e.openHook(ctx, index)
	}
	if err := e.openErr[index]; err != nil {
		return nil, err
	}
	if index < 0 || index >= len(e.files) {
		return nil, fmt.Errorf("no entry %d: %w", index, fs.ErrNotExist)
	}
	e.opened.Add(1)
	return &memFile{data: e.files[index], claimSize: e.shrunk[index], closed: &e.closed}, nil
}

func (e *memExport) Complete(_ context.Context, report string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reports = append(e.reports, report)
	return nil
}

type memExports map[string]*memExport

func (m memExports) Lookup(id string) (Export, bool) {
	e, ok := m[id]
	if !ok {
		return nil, false
	}
	return e, true
}

// newMemExport returns an export with the given files and its token.
func newMemExport(t testing.TB, files [][]byte) (*memExport, string) {
	t.Helper()
	token, hash, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return &memExport{hash: hash, files: files, manifest: []byte("manifest-v1\n")}, token
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func debugLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testServer struct {
	srv  *Server
	id   *Identity
	addr string
}

type listenerWrapper func(net.Listener) net.Listener

// startServer runs a real TLS server on loopback.
func startServer(t testing.TB, exports Exports, opts ServerOptions, log *slog.Logger, wrap ...listenerWrapper) *testServer {
	t.Helper()
	id, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	for _, w := range wrap {
		l = w(l)
	}
	srv := NewServer(exports, id, opts, log)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{srv: srv, id: id, addr: addr}
}

func (ts *testServer) ticket(exportID, token string) Ticket {
	return Ticket{Addr: ts.addr, ExportID: exportID, Token: token, Fingerprint: ts.id.Fingerprint()}
}

func newTestClient(t testing.TB, tk Ticket, opts ClientOptions) *Client {
	t.Helper()
	if opts.RetryWaitMin == 0 {
		opts.RetryWaitMin = 10 * time.Millisecond
	}
	if opts.RetryWaitMax == 0 {
		opts.RetryWaitMax = 50 * time.Millisecond
	}
	c, err := NewClient(tk, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// rawClient is a plain HTTP client pinned to the server, for inspecting
// responses directly.
func (ts *testServer) rawClient(t testing.TB) *http.Client {
	t.Helper()
	conf, err := PinnedTLSConfig(ts.id.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (ts *testServer) url(path string) string { return "https://" + ts.addr + path }

// cutListener makes the first `flaky` accepted connections close after
// writing limit bytes, simulating connections that die mid-transfer.
type cutListener struct {
	net.Listener
	limit int64
	flaky atomic.Int64
	cuts  atomic.Int64
}

func (l *cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.flaky.Add(-1) >= 0 {
		return &cutConn{Conn: c, left: l.limit, cuts: &l.cuts}, nil
	}
	return c, nil
}

type cutConn struct {
	net.Conn
	mu   sync.Mutex
	left int64
	cuts *atomic.Int64
}

func (c *cutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left <= 0 {
		return 0, net.ErrClosed
	}
	if int64(len(p)) > c.left {
		n, _ := c.Conn.Write(p[:c.left])
		c.left = 0
		c.cuts.Add(1)
		c.Close()
		return n, net.ErrClosed
	}
	n, err := c.Conn.Write(p)
	c.left -= int64(n)
	return n, err
}

// delayProxy forwards TCP connections to target, delivering every chunk
// delay after it was read in each direction: a long fat pipe (RTT = 2 ×
// delay, bandwidth limited only by CPU) for flow-control measurements.
func delayProxy(t testing.TB, target string, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go delayPipe(u, c, delay)
			go delayPipe(c, u, delay)
		}
	}()
	return l.Addr().String()
}

func delayPipe(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 1<<16)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			if n > 0 {
				ch <- chunk{b[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}
