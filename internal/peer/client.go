package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

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
	// MaxManifestBytes is the most bytes Manifest delivers, default 1 GiB
	// (manifest.DefaultLimits.MaxBytes: a gzip stream of JSON lines is
	// smaller than what it holds). A longer body fails with
	// ErrManifestTooLarge rather than ending, so it cannot pass as whole.
	MaxManifestBytes int64
}

// DefaultMaxManifestBytes is the default of ClientOptions.MaxManifestBytes.
const DefaultMaxManifestBytes = 1 << 30

// withDefaults fills in the defaults documented on ClientOptions.
func (o ClientOptions) withDefaults() ClientOptions {
	if o.RetryMax == 0 {
		o.RetryMax = 10
	} else if o.RetryMax < 0 {
		o.RetryMax = 0
	}
	if o.RetryWaitMin <= 0 {
		o.RetryWaitMin = 100 * time.Millisecond
	}
	if o.RetryWaitMax <= 0 {
		o.RetryWaitMax = 5 * time.Second
	}
	if o.RetryWaitMax < o.RetryWaitMin {
		o.RetryWaitMax = o.RetryWaitMin
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.BodyIdleTimeout <= 0 {
		o.BodyIdleTimeout = 20 * time.Second
	}
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = 60 * time.Second
	}
	if o.MaxManifestBytes <= 0 {
		o.MaxManifestBytes = DefaultMaxManifestBytes
	}
	return o
}

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
	opts = opts.withDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc := newHTTPClient(tlsConf, opts)
	c := &Client{
		ticket: t,
		base:   "https://" + t.Addr + "/v1/exports/" + t.ExportID,
		opts:   opts,
		log:    log,
		hc:     hc,
	}
	c.rc = newRetryClient(hc, opts, c.checkRetry)
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
// reading fails, call Manifest again (it is not resumable). The body
// delivers at most ClientOptions.MaxManifestBytes: reading past them fails
// with ErrManifestTooLarge.
func (c *Client) Manifest(ctx context.Context) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, "/manifest", nil, "")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.statusError(resp, "fetching the manifest", -1)
	}
	tooLarge := fmt.Errorf("fetching the manifest: %s sent more than %d bytes (the client's MaxManifestBytes): refused, "+
		"as a source that sends this much is broken or hostile: %w", c.where(), c.opts.MaxManifestBytes, ErrManifestTooLarge)
	if resp.ContentLength > c.opts.MaxManifestBytes {
		resp.Body.Close() // not drained: it is too large to be worth it
		return nil, tooLarge
	}
	return &cappedBody{ReadCloser: resp.Body, left: c.opts.MaxManifestBytes, over: tooLarge}, nil
}

// cappedBody delivers at most left bytes of a body and fails with over,
// not io.EOF, if it has more.
type cappedBody struct {
	io.ReadCloser
	left int64
	over error
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// At the bound: fine if the body ends here.
		var one [1]byte
		n, err := b.ReadCloser.Read(one[:])
		if n > 0 {
			return 0, b.over
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
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
