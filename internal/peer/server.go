package peer

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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
}

func (o ServerOptions) withDefaults() ServerOptions {
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
}

// NewServer returns a server for exports presenting identity id. A nil log
// discards logs.
func NewServer(exports Exports, id *Identity, opts ServerOptions, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		exports:  exports,
		opts:     opts.withDefaults(),
		log:      log,
		inflight: make(map[string]int),
	}
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

// Serve accepts TLS connections on l (a plain TCP listener) until Shutdown.
// It returns http.ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	return s.srv.ServeTLS(l, "", "")
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close closes all connections immediately.
func (s *Server) Close() error { return s.srv.Close() }

type exportHandler func(w http.ResponseWriter, r *http.Request, exp Export)

const unauthorizedBody = "unauthorized: unknown export or wrong credential\n"

// withExport authenticates the request and holds one of the export's
// concurrency slots while h runs.
func (s *Server) withExport(h exportHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		exp, ok := s.authenticate(r, id)
		if !ok {
			// Same answer for unknown export, wrong and missing credential:
			// a prober learns nothing about which exports exist.
			w.Header().Set("WWW-Authenticate", `Bearer realm="cargo"`)
			http.Error(w, strings.TrimSuffix(unauthorizedBody, "\n"), http.StatusUnauthorized)
			return
		}
		if !s.acquire(id) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "the source is busy serving this export; retry shortly", http.StatusTooManyRequests)
			return
		}
		defer s.release(id)
		h(w, r, exp)
	}
}

// dummyHash is compared against when the export is unknown so both paths do
// the same work.
var dummyHash = HashToken("cargo-no-such-export")

func (s *Server) authenticate(r *http.Request, id string) (Export, bool) {
	token, ok := bearerToken(r)
	if !ok {
		return nil, false
	}
	got := HashToken(token)
	var exp Export
	want := dummyHash
	found := false
	if ValidExportID(id) {
		if exp, found = s.exports.Lookup(id); found {
			want = exp.TokenHash()
		}
	}
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	if !found || !match {
		return nil, false
	}
	return exp, true
}

func bearerToken(r *http.Request) (string, bool) {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

func (s *Server) acquire(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[id] >= s.opts.MaxConcurrentPerExport {
		return false
	}
	s.inflight[id]++
	return true
}

func (s *Server) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[id] <= 1 {
		delete(s.inflight, id) // keep the map from growing with dead exports
	} else {
		s.inflight[id]--
	}
}

// serveManifest: GET /v1/exports/{id}/manifest.
func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, exp Export) {
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &countWriter{w: w}
	bw := getBufioWriter(cw)
	defer putBufioWriter(bw)
	if err := exp.WriteManifest(r.Context(), bw); err != nil {
		if r.Context().Err() != nil {
			return
		}
		if cw.n == 0 {
			// Nothing sent yet (it is still buffered): a clean error status.
			http.Error(w, "the source could not produce the manifest: "+shortMessage(err.Error()), http.StatusInternalServerError)
			return
		}
		s.log.Warn("manifest failed mid-stream; aborting the response", "export", r.PathValue("id"), "err", err)
		abortResponse(w)
	}
	_ = bw.Flush() // an error here means the client went away
}

// serveFile: GET /v1/exports/{id}/files/{index}, with an optional single
// "Range: bytes=" header.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, exp Export) {
	index, ok := parseIndex(r.PathValue("index"))
	if !ok {
		http.Error(w, "bad file index", http.StatusBadRequest)
		return
	}
	f, err := exp.Open(r.Context(), index)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		w.Header().Set(headerError, errFileUnavailable)
		http.Error(w, fmt.Sprintf("file %d is unavailable on the source: %s", index, shortMessage(err.Error())), http.StatusNotFound)
		return
	}
	defer f.Close()
	size := f.Size()
	if size < 0 {
		http.Error(w, "the source reported a negative file size", http.StatusInternalServerError)
		return
	}

	start, length, status := int64(0), size, http.StatusOK
	if ranges := r.Header.Values("Range"); len(ranges) > 0 {
		var ok bool
		if len(ranges) == 1 {
			start, length, ok = parseRange(ranges[0], size)
		}
		if !ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			http.Error(w, "requested range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
	}
	h := w.Header()
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead || length == 0 {
		return
	}
	buf := getCopyBuf()
	defer putCopyBuf(buf)
	_, readErr, writeErr := copyAt(w, f, start, length, *buf)
	if writeErr != nil {
		return // client went away
	}
	if readErr != nil {
		// The header promised length bytes; sending fewer must look like a
		// broken transfer to the client, never like a complete one.
		s.log.Warn("file read failed mid-stream; aborting the response",
			"export", r.PathValue("id"), "index", index, "err", readErr)
		abortResponse(w)
	}
}

// serveBatch: POST /v1/exports/{id}/batch with {"files":[...]}.
func (s *Server) serveBatch(w http.ResponseWriter, r *http.Request, exp Export) {
	var req batchRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	if len(req.Files) > s.opts.MaxBatchFiles {
		http.Error(w, fmt.Sprintf("too many files in one batch: %d, limit %d", len(req.Files), s.opts.MaxBatchFiles),
			http.StatusRequestEntityTooLarge)
		return
	}
	for _, i := range req.Files {
		if i < 0 || i > maxIndex {
			http.Error(w, fmt.Sprintf("bad file index %d", i), http.StatusBadRequest)
			return
		}
	}
	w.Header().Set("Content-Type", contentTypeBatch)
	w.WriteHeader(http.StatusOK)
	// Send the headers now: from here on the client has a stream and can
	// tell which files arrived if it breaks, instead of retrying the whole
	// request; it also learns early that the request was accepted.
	_ = http.NewResponseController(w).Flush()

	ctx := r.Context()
	bw := getBufioWriter(w)
	defer putBufioWriter(bw)
	buf := getCopyBuf()
	defer putCopyBuf(buf)
	var hdr [frameHeaderLen]byte
	for _, index := range req.Files {
		if ctx.Err() != nil {
			return
		}
		f, err := exp.Open(ctx, index)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			msg := shortMessage(err.Error())
			frameHeader{index: uint32(index), flags: frameFlagError, size: uint64(len(msg))}.put(&hdr)
			if _, err := bw.Write(hdr[:]); err != nil {
				return
			}
			if _, err := bw.WriteString(msg); err != nil {
				return
			}
			continue
		}
		size := f.Size()
		if size < 0 {
			f.Close()
			s.log.Warn("negative file size; aborting the batch", "export", r.PathValue("id"), "index", index)
			_ = bw.Flush()
			abortResponse(w)
		}
		frameHeader{index: uint32(index), size: uint64(size)}.put(&hdr)
		if _, err := bw.Write(hdr[:]); err != nil {
			f.Close()
			return
		}
		_, readErr, writeErr := copyAt(bw, f, 0, size, *buf)
		f.Close()
		if writeErr != nil {
			return
		}
		if readErr != nil {
			// See the package doc: the frame promised size bytes.
			s.log.Warn("file read failed mid-batch; aborting the response",
				"export", r.PathValue("id"), "index", index, "err", readErr)
			_ = bw.Flush() // deliver the complete frames before the break
			abortResponse(w)
		}
	}
	_ = bw.Flush()
}

// serveComplete: POST /v1/exports/{id}/complete with {"report":"..."}.
func (s *Server) serveComplete(w http.ResponseWriter, r *http.Request, exp Export) {
	var req completeRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	if err := exp.Complete(r.Context(), req.Report); err != nil {
		if r.Context().Err() != nil {
			return
		}
		http.Error(w, "the source could not record completion: "+shortMessage(err.Error()), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodeBody reads a small JSON body under size and time limits, writing the
// error response itself when it fails.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.opts.BodyReadTimeout))
	// Lift the deadline again: on HTTP/1.1 it would otherwise cancel the
	// request while a long response is still streaming.
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()

	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Exactly one JSON value.
		if _, err2 := dec.Token(); err2 != io.EOF {
			err = errors.New("trailing data after the JSON body")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("request body larger than %d bytes", s.opts.MaxBodyBytes), http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "bad request body: "+shortMessage(err.Error()), http.StatusBadRequest)
		}
		return false
	}
	return true
}

// abortResponse breaks the response so the client sees a truncated transfer
// (RST_STREAM on HTTP/2, a cut connection on HTTP/1.1), after pushing out
// what was written so far so the client keeps the complete part.
func abortResponse(w http.ResponseWriter) {
	_ = http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}

// copyAt copies exactly n bytes of src starting at off into dst, telling
// apart failures to read (including a file that ended early) from failures
// to write (the client went away).
func copyAt(dst io.Writer, src io.ReaderAt, off, n int64, buf []byte) (written int64, readErr, writeErr error) {
	for written < n {
		chunk := buf
		if rem := n - written; rem < int64(len(chunk)) {
			chunk = chunk[:rem]
		}
		m, err := src.ReadAt(chunk, off+written)
		if m > 0 {
			w, werr := dst.Write(chunk[:m])
			written += int64(w)
			if werr != nil {
				return written, nil, werr
			}
		}
		if m < len(chunk) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the file shrank since it was opened
			}
			return written, fmt.Errorf("reading at offset %d: %w", off+written, err), nil
		}
	}
	return written, nil, nil
}

// parseIndex accepts plain decimal digits only (no sign, no spaces).
func parseIndex(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return int(v), true
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

// shortMessage truncates an error message for the wire, keeping UTF-8 valid.
func shortMessage(s string) string {
	if len(s) <= maxErrorMessage {
		return s
	}
	s = s[:maxErrorMessage]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Buffer pools: batch responses are assembled in a large bufio.Writer so many
// small files become few large writes; file content moves through a pooled
// copy buffer so no request allocates per file.
const (
	bufioSize   = 256 << 10
	copyBufSize = 256 << 10
)

var (
	bufioPool   = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufioSize) }}
	copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
)

func getBufioWriter(w io.Writer) *bufio.Writer {
	bw := bufioPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putBufioWriter(bw *bufio.Writer) {
	bw.Reset(nil) // drop the reference to the response
	bufioPool.Put(bw)
}

func getCopyBuf() *[]byte  { return copyBufPool.Get().(*[]byte) }
func putCopyBuf(b *[]byte) { copyBufPool.Put(b) }

// countWriter counts bytes passed to the response.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// statusRecorder captures what the logging middleware reports.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logRequests logs every request at debug level. It never logs headers, so
// the credential cannot leak into logs.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		aborted := true
		defer func() {
			id := r.PathValue("id")
			if len(id) > 128 {
				id = id[:128]
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			s.log.Debug("peer request", "export", id, "route", route, "status", status,
				"bytes", rec.bytes, "duration", time.Since(start), "remote", r.RemoteAddr, "proto", r.Proto, "aborted", aborted)
		}()
		next.ServeHTTP(rec, r)
		aborted = false
	})
}
