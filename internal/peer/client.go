package peer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Sentinel errors for permanent failures; test with errors.Is. Requests that
// fail with them are never retried.
var (
	// ErrUnauthorized: the source refused the credential. The server cannot
	// tell (and does not say) whether the export was closed or the token is
	// wrong, so this is also what a closed export looks like.
	ErrUnauthorized = errors.New("credential refused by the source")
	// ErrExportGone: the source does not serve this export (404/410).
	ErrExportGone = errors.New("export not served by the source")
	// ErrFileUnavailable: one file could not be opened on the source; see
	// *FileError.
	ErrFileUnavailable = errors.New("file unavailable on the source")
)

// FileError reports a file the source could not open (vanished, unreadable,
// unknown index). It matches ErrFileUnavailable.
type FileError struct {
	Index   int
	Message string // from the source
}

func (e *FileError) Error() string {
	return fmt.Sprintf("file %d of the export is unavailable on the source: %s", e.Index, e.Message)
}

// Is makes errors.Is(err, ErrFileUnavailable) true.
func (e *FileError) Is(target error) bool { return target == ErrFileUnavailable }

// BatchError is returned by Client.Batch when not every file was delivered.
// fn was called (and returned nil) for exactly the requested indexes that
// are in neither Failed nor Missing.
type BatchError struct {
	// Failed maps indexes the source could not open to its message. Retry
	// them individually (ReadRange) to get a definite answer per file.
	Failed map[int]string
	// Missing lists, in request order, the indexes that were not delivered
	// because the stream broke or fn failed, including the one in progress.
	// Request them again.
	Missing []int
	// Err is why delivery stopped (nil if the only problem is Failed). A broken
	// stream matches io.ErrUnexpectedEOF; an error from fn is wrapped as is.
	Err error
}

func (e *BatchError) Error() string {
	var parts []string
	if e.Err != nil {
		parts = append(parts, fmt.Sprintf("%v (%d files not delivered)", e.Err, len(e.Missing)))
	}
	if len(e.Failed) > 0 {
		idx := make([]int, 0, len(e.Failed))
		for i := range e.Failed {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		first := idx[0]
		more := ""
		if len(idx) > 1 {
			more = fmt.Sprintf(" and %d more", len(idx)-1)
		}
		parts = append(parts, fmt.Sprintf("%d files unavailable on the source (file %d: %s%s)",
			len(idx), first, e.Failed[first], more))
	}
	return "batch transfer incomplete: " + strings.Join(parts, "; ")
}

func (e *BatchError) Unwrap() error { return e.Err }

// ClientOptions tunes a Client. Zero values select the defaults shown.
type ClientOptions struct {
	// RetryMax is how often a failed request (connection error, 429, 5xx) or
	// a broken body is retried before giving up, default 10; negative
	// disables retries. For ReadRange the count restarts whenever a retry
	// made progress.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff, default
	// 100ms and 5s. A 429's Retry-After takes precedence.
	RetryWaitMin, RetryWaitMax time.Duration
	// DialTimeout bounds connecting, default 5s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response's headers, default
	// 60s. Bodies are not bounded in time (they may be large); a body that
	// stops delivering is broken by BodyIdleTimeout, and dead HTTP/2
	// connections are found by pings.
	ResponseHeaderTimeout time.Duration
	// Logger receives debug logs; nil discards them. The credential is never
	// logged.
	Logger *slog.Logger
	// BodyIdleTimeout breaks a response body that delivers nothing for
	// this long, default 20s (see watchdog).
	BodyIdleTimeout time.Duration
	// OnRetry, if set, is called with the failure before each retry, so the
	// caller can show "stalled: <err>". It must not block and may be called
	// from several goroutines at once.
	OnRetry func(err error)
	// ForceHTTP1 uses HTTP/1.1 (one connection per concurrent request)
	// instead of HTTP/2. Go's HTTP/1.1 moves bulk data with roughly half the
	// CPU per byte of its HTTP/2 (see the benchmarks); HTTP/2 multiplexes
	// many concurrent small reads over one connection.
	ForceHTTP1 bool
}

// HTTP/2 receive windows of the client. The net/http default per-stream
// window (4 MiB) caps one stream at 4 MiB per round trip, about 80 MB/s at
// 50 ms RTT; 16 MiB keeps a single large ReadRange fast over long fat links.
const (
	clientStreamWindow = 16 << 20
	clientConnWindow   = 64 << 20
)

// Client talks to one export on one source host. It is safe for concurrent
// use; HTTP/2 multiplexes concurrent calls over few connections.
type Client struct {
	ticket Ticket
	base   string // https://host:port/v1/exports/ID
	opts   ClientOptions
	log    *slog.Logger
	hc     *http.Client
	rc     *retryablehttp.Client
}

// NewClient validates t and prepares a client pinned to t.Fingerprint. It
// does not connect yet.
func NewClient(t Ticket, opts ClientOptions) (*Client, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	tlsConf, err := PinnedTLSConfig(t.Fingerprint)
	if err != nil {
		return nil, err
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 10
	} else if opts.RetryMax < 0 {
		opts.RetryMax = 0
	}
	if opts.RetryWaitMin <= 0 {
		opts.RetryWaitMin = 100 * time.Millisecond
	}
	if opts.RetryWaitMax <= 0 {
		opts.RetryWaitMax = 5 * time.Second
	}
	if opts.RetryWaitMax < opts.RetryWaitMin {
		opts.RetryWaitMax = opts.RetryWaitMin
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.BodyIdleTimeout <= 0 {
		opts.BodyIdleTimeout = 20 * time.Second
	}
	if opts.ResponseHeaderTimeout <= 0 {
		opts.ResponseHeaderTimeout = 60 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	dialer := &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil, // always direct: the peer is pinned, a proxy adds nothing
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          8,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		DisableCompression:    true, // file content: compression would cost CPU and hide sizes
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     clientStreamWindow,
			MaxReceiveBufferPerConnection: clientConnWindow,
			SendPingTimeout:               5 * time.Second,
			PingTimeout:                   5 * time.Second,
		},
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	tr.Protocols.SetHTTP2(!opts.ForceHTTP1)
	hc := &http.Client{
		Transport: tr,
		// The server never redirects; following one could only send the
		// credential somewhere unexpected.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	c := &Client{
		ticket: t,
		base:   "https://" + t.Addr + "/v1/exports/" + t.ExportID,
		opts:   opts,
		log:    log,
		hc:     hc,
	}
	rc := &retryablehttp.Client{
		HTTPClient:   hc,
		RetryWaitMin: opts.RetryWaitMin,
		RetryWaitMax: opts.RetryWaitMax,
		RetryMax:     opts.RetryMax,
		CheckRetry:   c.checkRetry,
		Backoff:      retryablehttp.DefaultBackoff,
		ErrorHandler: giveUp,
	}
	if opts.Logger != nil {
		rc.Logger = retryLogger{opts.Logger}
	}
	c.rc = rc
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Ticket returns the ticket the client was made from.
func (c *Client) Ticket() Ticket { return c.ticket }

func (c *Client) where() string {
	return "the source host's cargo plugin at " + c.ticket.Addr
}

// Manifest fetches the export's manifest. The caller reads and closes it; if
// reading fails, call Manifest again (it is not resumable).
func (c *Client) Manifest(ctx context.Context) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, "/manifest", nil, "")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.statusError(resp, "fetching the manifest", -1)
	}
	return resp.Body, nil
}

// Complete tells the source the copy is complete, with a free-form report.
func (c *Client) Complete(ctx context.Context, report string) error {
	body, err := json.Marshal(completeRequest{Report: report})
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/complete", body, "")
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return c.statusError(resp, "reporting completion", -1)
	}
	return nil
}

// ReadRange copies bytes [off, off+n) of file index into w (n < 0: to the
// end of the file) and returns how many bytes it wrote.
//
// If the response body breaks (connection reset, unexpected EOF, dead
// HTTP/2 connection), ReadRange continues with a new Range request from the
// first byte not yet written, with backoff, so w receives every byte exactly
// once. The retry budget restarts whenever an attempt made progress.
//
// Like io.ReaderAt, if the file ends before off+n, ReadRange writes what
// there is and returns io.EOF; with n < 0 reaching the end is success. A
// failing w stops ReadRange at once with w's error.
func (c *Client) ReadRange(ctx context.Context, index int, off, n int64, w io.Writer) (int64, error) {
	if index < 0 || index > maxIndex {
		return 0, fmt.Errorf("invalid file index %d", index)
	}
	if off < 0 {
		return 0, fmt.Errorf("invalid offset %d", off)
	}
	if n == 0 {
		return 0, nil
	}
	if n > 0 && off > math.MaxInt64-n {
		return 0, fmt.Errorf("range at offset %d of length %d overflows", off, n)
	}
	path := "/files/" + strconv.Itoa(index)
	buf := getCopyBuf()
	defer putCopyBuf(buf)

	var written int64
	size := int64(-1) // file size as first reported, to detect changes between resumes
	failures := 0
	for {
		pos := off + written
		remaining := int64(-1)
		if n > 0 {
			remaining = n - written
		}
		rangeHdr := ""
		switch {
		case remaining > 0:
			rangeHdr = fmt.Sprintf("bytes=%d-%d", pos, pos+remaining-1)
		case pos > 0:
			rangeHdr = fmt.Sprintf("bytes=%d-", pos)
		}
		resp, err := c.do(ctx, http.MethodGet, path, nil, rangeHdr)
		if err != nil {
			return written, err
		}

		var total, expect, skip int64
		switch resp.StatusCode {
		case http.StatusOK: // whole file: the server ignored or was not sent a Range
			total = resp.ContentLength
			skip = pos
			expect = -1
			if total >= 0 {
				expect = max(total-pos, 0)
				if remaining > 0 {
					expect = min(expect, remaining)
				}
			}
		case http.StatusPartialContent:
			first, last, t, ok := parseContentRange(resp.Header.Get("Content-Range"))
			if !ok || first != pos || (remaining > 0 && last-first+1 > remaining) {
				drainClose(resp.Body)
				return written, fmt.Errorf("reading file %d: %s answered with a range (%q) that was not asked for",
					index, c.where(), resp.Header.Get("Content-Range"))
			}
			total, expect = t, last-first+1
		case http.StatusRequestedRangeNotSatisfiable:
			t, ok := parseUnsatisfiedRange(resp.Header.Get("Content-Range"))
			drainClose(resp.Body)
			if !ok || pos < t {
				return written, fmt.Errorf("reading file %d at offset %d: %s refused the range", index, pos, c.where())
			}
			if size >= 0 && t != size {
				return written, c.sizeChanged(index, size, t)
			}
			// pos is at or past the end of the file.
			if n > 0 || pos > t {
				return written, io.EOF
			}
			return written, nil
		default:
			return written, c.statusError(resp, fmt.Sprintf("reading file %d", index), index)
		}
		if total >= 0 {
			if size >= 0 && total != size {
				drainClose(resp.Body)
				return written, c.sizeChanged(index, size, total)
			}
			size = total
		}

		var m int64
		var readErr, writeErr error
		if skip > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, skip); err != nil {
				readErr = err
			}
		}
		if readErr == nil {
			m, readErr, writeErr = copyStream(w, resp.Body, expect, *buf)
		}
		resp.Body.Close()
		written += m
		if writeErr != nil {
			return written, writeErr
		}
		if readErr == nil {
			if n > 0 && written < n {
				return written, io.EOF // the file ends before off+n
			}
			return written, nil
		}
		if ctx.Err() != nil {
			return written, ctx.Err()
		}
		if m > 0 {
			failures = 0
		}
		failures++
		err = fmt.Errorf("reading file %d from %s broke after %d bytes: %w", index, c.where(), written, readErr)
		if failures > c.opts.RetryMax {
			return written, err
		}
		c.log.Debug("resuming broken file transfer", "index", index, "offset", off+written, "err", readErr)
		c.notifyRetry(err)
		if err := sleepCtx(ctx, retryablehttp.DefaultBackoff(c.opts.RetryWaitMin, c.opts.RetryWaitMax, failures-1, nil)); err != nil {
			return written, err
		}
	}
}

func (c *Client) sizeChanged(index int, was, now int64) error {
	return fmt.Errorf("file %d changed size on the source while being copied (%d bytes, now %d): the export is not frozen",
		index, was, now)
}

// Batch fetches many files in one request and calls fn for each, in the
// order of indexes, with the file's size and a reader of exactly that many
// bytes. fn should consume the reader; what it leaves is discarded. fn is
// not called for files the source reports as unavailable. The reader is
// valid only until fn returns. Batches larger
// than DefaultMaxBatchFiles are split into several requests.
//
// Starting a request is retried like any other; a stream that breaks midway
// is not, because fn has already consumed part of it. Batch returns nil if
// every file was delivered, otherwise a *BatchError saying which files
// failed on the source (Failed) and which were not delivered (Missing), so
// the caller can retry exactly those. An error from fn stops the batch and
// is wrapped in the *BatchError. Errors from before the first frame (bad
// credential, export gone, ...) are returned as is.
func (c *Client) Batch(ctx context.Context, indexes []int, fn func(index int, size int64, r io.Reader) error) error {
	for _, i := range indexes {
		if i < 0 || i > maxIndex {
			return fmt.Errorf("invalid file index %d", i)
		}
	}
	var failed map[int]string
	for start := 0; start < len(indexes); start += DefaultMaxBatchFiles {
		end := min(start+DefaultMaxBatchFiles, len(indexes))
		done, started, err := c.batchOnce(ctx, indexes[start:end], fn, &failed)
		if err != nil {
			if start == 0 && !started {
				return err
			}
			missing := append(append([]int(nil), indexes[start+done:end]...), indexes[end:]...)
			return &BatchError{Failed: failed, Missing: missing, Err: err}
		}
	}
	if len(failed) > 0 {
		return &BatchError{Failed: failed}
	}
	return nil
}

// batchOnce runs one batch request; done is how many of chunk were handled
// (delivered or failed on the source), started whether a response stream was
// opened at all.
func (c *Client) batchOnce(ctx context.Context, chunk []int, fn func(int, int64, io.Reader) error,
	failed *map[int]string) (done int, started bool, err error) {
	body, err := json.Marshal(batchRequest{Files: chunk})
	if err != nil {
		return 0, false, err
	}
	resp, err := c.do(ctx, http.MethodPost, "/batch", body, "")
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, c.statusError(resp, "fetching a batch of files", -1)
	}
	br := getBufioReader(resp.Body)
	defer putBufioReader(br)

	broken := func(i int, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("the batch stream from %s broke after %d of %d files: %w", c.where(), i, len(chunk), err)
		}
		return fmt.Errorf("the batch stream from %s broke after %d of %d files: %w: %w",
			c.where(), i, len(chunk), io.ErrUnexpectedEOF, err)
	}
	var hdr [frameHeaderLen]byte
	fr := new(frameReader) // reused for every frame: r is only valid during fn
	for i, want := range chunk {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // fewer frames than requested
			}
			return i, true, broken(i, err)
		}
		h, err := parseFrameHeader(&hdr)
		if err == nil && int(h.index) != want {
			err = fmt.Errorf("frame for file %d where file %d was expected", h.index, want)
		}
		if err != nil {
			return i, true, fmt.Errorf("the batch stream from %s is malformed: %w", c.where(), err)
		}
		if h.flags&frameFlagError != 0 {
			msg := make([]byte, h.size) // bounded by maxErrorMessage in parseFrameHeader
			if _, err := io.ReadFull(br, msg); err != nil {
				return i, true, broken(i, err)
			}
			if *failed == nil {
				*failed = make(map[int]string)
			}
			(*failed)[want] = string(msg)
			continue
		}
		*fr = frameReader{r: br, n: int64(h.size)}
		if err := fn(want, int64(h.size), fr); err != nil {
			if fr.err != nil {
				return i, true, broken(i, fr.err)
			}
			return i, true, fmt.Errorf("handling file %d: %w", want, err)
		}
		if fr.err == nil && fr.n > 0 {
			_, _ = io.Copy(io.Discard, fr) // fr.err records a failure
		}
		if fr.err != nil {
			return i, true, broken(i, fr.err)
		}
	}
	// Read the end of the stream so an HTTP/1.1 connection can be reused.
	if _, err := br.Peek(1); err != io.EOF {
		c.log.Debug("unexpected data after the last batch frame", "err", err)
	}
	return len(chunk), true, nil
}

// frameReader yields exactly n bytes of one frame and turns a premature end
// of the stream into io.ErrUnexpectedEOF (a plain io.LimitReader would report
// a truncated file as complete).
type frameReader struct {
	r   io.Reader
	n   int64
	err error // sticky stream failure
}

func (f *frameReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	m, err := f.r.Read(p)
	f.n -= int64(m)
	if err == io.EOF {
		if f.n == 0 {
			err = nil
		} else {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		f.err = err
	}
	return m, err
}

// do sends a request through the retrying client. rangeHdr is an optional
// Range header value.
func (c *Client) do(ctx context.Context, method, path string, body []byte, rangeHdr string) (*http.Response, error) {
	ctx = context.WithValue(ctx, attemptsKey{}, new(int))
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	var raw any
	if body != nil {
		raw = body
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, c.base+path, raw)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.ticket.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
	}
	resp, err := c.rc.Do(req)
	if err != nil {
		cancel()
		if parent.Err() != nil {
			return nil, parent.Err()
		}
		return nil, fmt.Errorf("connecting to %s: %w", c.where(), err)
	}
	resp.Body = newWatchdog(resp.Body, c.opts.BodyIdleTimeout, cancel)
	return resp, nil
}

// watchdog breaks a response body that stops delivering: HTTP/1.1 has no
// pings, so a vanished peer (a cut link sends no reset) would block a read
// for ever. Only time spent blocked in Read counts, so a slow consumer
// never trips it. A tripped body reads as broken (io.ErrUnexpectedEOF), so
// callers resume or retry as after a cut connection.
type watchdog struct {
	body    io.ReadCloser
	idle    time.Duration
	cancel  context.CancelFunc
	timer   *time.Timer
	tripped atomic.Bool
}

func newWatchdog(body io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *watchdog {
	w := &watchdog{body: body, idle: idle, cancel: cancel}
	w.timer = time.AfterFunc(time.Hour, func() {
		w.tripped.Store(true)
		cancel()
	})
	w.timer.Stop()
	return w
}

func (w *watchdog) Read(p []byte) (int, error) {
	w.timer.Reset(w.idle)
	n, err := w.body.Read(p)
	w.timer.Stop()
	if err != nil && w.tripped.Load() {
		err = fmt.Errorf("no data for %v: %w", w.idle, io.ErrUnexpectedEOF)
	}
	return n, err
}

func (w *watchdog) Close() error {
	w.timer.Stop()
	err := w.body.Close()
	w.cancel()
	return err
}

type attemptsKey struct{}

// checkRetry decides which failures are worth retrying: connection problems,
// 429 and 5xx. Authentication failures, a wrong fingerprint and other 4xx
// are permanent.
func (c *Client) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	var why error
	if err != nil {
		if errors.Is(err, ErrFingerprintMismatch) {
			return false, err
		}
		// Reuse the library's list of permanent transport errors (bad
		// scheme, certificate errors, ...).
		if retry, perr := retryablehttp.ErrorPropagatedRetryPolicy(ctx, nil, err); !retry {
			return false, perr
		}
		why = err
	} else if resp.StatusCode == http.StatusTooManyRequests ||
		resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented {
		why = fmt.Errorf("%s answered %s", c.where(), resp.Status)
	}
	if why == nil {
		return false, nil
	}
	// CheckRetry also runs after the last attempt; only report failures that
	// are really followed by a retry.
	if p, ok := ctx.Value(attemptsKey{}).(*int); ok {
		*p++
		if *p > c.opts.RetryMax {
			return true, nil
		}
	}
	c.log.Debug("retrying peer request", "err", why)
	c.notifyRetry(why)
	return true, nil
}

func (c *Client) notifyRetry(err error) {
	if c.opts.OnRetry != nil {
		c.opts.OnRetry(err)
	}
}

// giveUp is the retryablehttp ErrorHandler: after the last attempt it hands
// a final response back for status mapping, or returns the last error.
func giveUp(resp *http.Response, err error, attempts int) (*http.Response, error) {
	if err == nil && resp != nil {
		return resp, nil
	}
	if resp != nil {
		drainClose(resp.Body)
	}
	if err == nil {
		err = errors.New("no response")
	}
	if attempts > 1 {
		return nil, fmt.Errorf("giving up after %d attempts: %w", attempts, err)
	}
	return nil, err
}

// statusError turns an unexpected response into an error for users and
// closes the body. index is the file concerned, or -1.
func (c *Client) statusError(resp *http.Response, what string, index int) error {
	msg := readMessage(resp.Body)
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%s: %s refused the credential for export %s: the export may have been closed, or the ticket is wrong: %w",
			what, c.where(), c.ticket.ExportID, ErrUnauthorized)
	case resp.StatusCode == http.StatusNotFound && resp.Header.Get(headerError) == errFileUnavailable:
		msg = strings.TrimPrefix(msg, fmt.Sprintf("file %d is unavailable on the source: ", index))
		return fmt.Errorf("%s: %w", what, &FileError{Index: index, Message: msg})
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return fmt.Errorf("%s: %s does not serve export %s (%s): %w", what, c.where(), c.ticket.ExportID, resp.Status, ErrExportGone)
	case resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("%s: %s stayed busy after %d retries: %s", what, c.where(), c.opts.RetryMax, msg)
	default:
		if msg != "" {
			return fmt.Errorf("%s: %s answered %s: %s", what, c.where(), resp.Status, msg)
		}
		return fmt.Errorf("%s: %s answered %s", what, c.where(), resp.Status)
	}
}

// readMessage reads a short error body and closes it.
func readMessage(body io.ReadCloser) string {
	defer drainClose(body)
	b, _ := io.ReadAll(io.LimitReader(body, 2*maxErrorMessage))
	return strings.TrimSpace(string(bytes.ToValidUTF8(b, []byte("?"))))
}

// drainClose reads a little of what is left so the connection can be reused,
// then closes.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}

// copyStream copies from r to w: exactly expect bytes, or to EOF when
// expect < 0. Read and write failures are reported separately because only
// read failures are worth resuming.
func copyStream(w io.Writer, r io.Reader, expect int64, buf []byte) (written int64, readErr, writeErr error) {
	for expect < 0 || written < expect {
		chunk := buf
		if expect >= 0 && expect-written < int64(len(chunk)) {
			chunk = chunk[:expect-written]
		}
		m, err := r.Read(chunk)
		if m > 0 {
			wn, werr := w.Write(chunk[:m])
			written += int64(wn)
			if werr == nil && wn < m {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return written, nil, werr
			}
		}
		if err == io.EOF {
			if expect >= 0 && written < expect {
				return written, io.ErrUnexpectedEOF, nil
			}
			return written, nil, nil
		}
		if err != nil {
			return written, err, nil
		}
	}
	return written, nil, nil
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

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var bufioReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufioSize) }}

func getBufioReader(r io.Reader) *bufio.Reader {
	br := bufioReaderPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putBufioReader(br *bufio.Reader) {
	br.Reset(nil)
	bufioReaderPool.Put(br)
}

// retryLogger adapts slog to retryablehttp's LeveledLogger. Everything goes
// to debug: failures that matter are returned to the caller. retryablehttp
// logs method and URL only; the credential is in a header and never logged.
type retryLogger struct{ l *slog.Logger }

func (r retryLogger) Error(msg string, kv ...any) { r.l.Debug(msg, kv...) }
func (r retryLogger) Info(msg string, kv ...any)  { r.l.Debug(msg, kv...) }
func (r retryLogger) Debug(msg string, kv ...any) { r.l.Debug(msg, kv...) }
func (r retryLogger) Warn(msg string, kv ...any)  { r.l.Debug(msg, kv...) }
