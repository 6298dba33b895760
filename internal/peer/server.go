package peer

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// File is one open file of an export.
type File interface {
	io.ReaderAt
	io.Closer
	// Size is the file's size at open time; the server sends exactly this
	// many bytes or aborts.
	Size() int64
}

// Export is one frozen volume served to one target. The plugin implements it.
type Export interface {
	// TokenHash is HashToken of the export's bearer credential.
	TokenHash() [32]byte
	// WriteManifest writes the manifest, opaque to this package.
	WriteManifest(ctx context.Context, w io.Writer) error
	// Open opens the file the manifest lists under index. Indexes come from
	// the network: Open must reject ones it did not assign. The error text is
	// sent to the (authenticated) client, so keep it short.
	Open(ctx context.Context, index int) (File, error)
	// Complete is called when the target reports it has copied everything.
	// Clients retry, so it may be called more than once: make it idempotent.
	Complete(ctx context.Context, report string) error
}

// Exports finds exports by id.
type Exports interface {
	Lookup(id string) (Export, bool)
}

// ServerOptions bounds what a client can make the server do. Zero values
// select the defaults shown.
type ServerOptions struct {
	MaxConcurrentPerExport int           // in-flight requests per export, 16; beyond it 429
	MaxBatchFiles          int           // indexes per batch request, 4096
	MaxBodyBytes           int64         // request body size, 1 MiB
	ReadHeaderTimeout      time.Duration // 10s
	BodyReadTimeout        time.Duration // time to read a request body, 30s
	IdleTimeout            time.Duration // 2m
	MaxHeaderBytes         int           // 16 KiB
	MaxConcurrentStreams   int           // HTTP/2 streams per connection, 64

	// MaxConns is how many connections may be open at once, default
	// DefaultMaxConns; never more than half the process's RLIMIT_NOFILE,
	// so that the volume API and the FUSE mounts keep descriptors whatever
	// the network does. A connection beyond it is closed at once.
	MaxConns int
	// MaxConnsPerAddr is how many of them may come from one IPv4 address
	// or IPv6 /64, default DefaultMaxConnsPerAddr (never more than
	// MaxConns): one host cannot take them all.
	MaxConnsPerAddr int
	// Observe, if set, is told of every request answered: its route
	// (the pattern matched, "unmatched" otherwise), status and duration.
	Observe func(route string, status int, d time.Duration)
	// HandshakeTimeout bounds a connection's TLS handshake, default 5s.
	HandshakeTimeout time.Duration
	// AuthTimeout closes a connection that has not carried a request with a
	// valid credential this long after it was accepted, default 10s. A
	// request refused for its credential closes its connection too.
	AuthTimeout time.Duration
}

// Connection bounds by default. A target host opens one HTTP/2 connection
// and up to about five HTTP/1.1 ones (the background copy's workers and
// their idle pool) per federated volume it copies, so 128 serve some 20
// volumes copying at once from one host.
const (
	DefaultMaxConns        = 1024
	DefaultMaxConnsPerAddr = 128
)

// withDefaults fills in the defaults; nofile is RLIMIT_NOFILE, 0 if
// unknown.
func (o ServerOptions) withDefaults(nofile uint64) ServerOptions {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxConcurrentPerExport, 16)
	def(&o.MaxBatchFiles, DefaultMaxBatchFiles)
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	defDur(&o.ReadHeaderTimeout, 10*time.Second)
	defDur(&o.BodyReadTimeout, 30*time.Second)
	defDur(&o.IdleTimeout, 2*time.Minute)
	def(&o.MaxHeaderBytes, 16<<10)
	def(&o.MaxConcurrentStreams, 64)
	def(&o.MaxConns, DefaultMaxConns)
	if nofile > 0 {
		o.MaxConns = int(min(uint64(o.MaxConns), max(nofile/2, 1)))
	}
	def(&o.MaxConnsPerAddr, DefaultMaxConnsPerAddr)
	o.MaxConnsPerAddr = min(o.MaxConnsPerAddr, o.MaxConns)
	defDur(&o.HandshakeTimeout, 5*time.Second)
	defDur(&o.AuthTimeout, 10*time.Second)
	return o
}

// Server serves exports to target hosts.
type Server struct {
	exports Exports
	opts    ServerOptions
	log     *slog.Logger
	handler http.Handler
	srv     *http.Server

	mu       sync.Mutex
	inflight map[string]int // export id -> requests in flight

	gate     *connGate
	refusals refusals
}

// NewServer returns a server for exports presenting identity id. A nil log
// discards logs. It reads RLIMIT_NOFILE now to bound MaxConns.
func NewServer(exports Exports, id *Identity, opts ServerOptions, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		exports:  exports,
		opts:     opts.withDefaults(openFileLimit()),
		log:      log,
		inflight: make(map[string]int),
	}
	s.gate = newConnGate(s.opts.MaxConns, s.opts.MaxConnsPerAddr)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/exports/{id}/manifest", s.withExport(s.serveManifest))
	mux.HandleFunc("GET /v1/exports/{id}/files/{index}", s.withExport(s.serveFile))
	mux.HandleFunc("POST /v1/exports/{id}/batch", s.withExport(s.serveBatch))
	mux.HandleFunc("POST /v1/exports/{id}/complete", s.withExport(s.serveComplete))
	s.handler = s.logRequests(mux)

	s.srv = &http.Server{
		Handler:           s.handler,
		TLSConfig:         id.TLSConfig(),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		ConnContext:       connContext,
		// No ReadTimeout/WriteTimeout: responses may stream gigabytes. Bodies
		// get BodyReadTimeout in the handlers instead.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: s.opts.MaxConcurrentStreams,
			// Find and drop connections whose peer vanished without a FIN.
			SendPingTimeout:  30 * time.Second,
			PingTimeout:      15 * time.Second,
			WriteByteTimeout: 2 * time.Minute,
		},
	}
	return s
}

// Handler returns the HTTP handler (without TLS), for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve accepts TLS connections on l (a plain TCP listener) until Shutdown,
// within the connection bounds of ServerOptions. It returns
// http.ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	// The listener does the TLS handshakes: net/http sees *tls.Conns whose
	// handshake is done, and serves HTTP/2 on them as TLSConfig offers it.
	return s.srv.Serve(s.newListener(l))
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close closes all connections immediately.
func (s *Server) Close() error { return s.srv.Close() }
