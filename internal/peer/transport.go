package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// HTTP/2 receive windows of the client. The net/http default per-stream
// window (4 MiB) caps one stream at 4 MiB per round trip, about 80 MB/s at
// 50 ms RTT; 16 MiB keeps a single large ReadRange fast over long fat links.
const (
	clientStreamWindow = 16 << 20
	clientConnWindow   = 64 << 20
)

// newHTTPClient returns the client's transport: direct, pinned by tlsConf,
// HTTP/2 unless opts.ForceHTTP1, never following redirects.
func newHTTPClient(tlsConf *tls.Config, opts ClientOptions) *http.Client {
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
	return hc
}

// newRetryClient wraps hc in the retry policy: checkRetry picks what is
// retried, giveUp what is returned after the last attempt.
func newRetryClient(hc *http.Client, opts ClientOptions, checkRetry retryablehttp.CheckRetry) *retryablehttp.Client {
	rc := &retryablehttp.Client{
		HTTPClient:   hc,
		RetryWaitMin: opts.RetryWaitMin,
		RetryWaitMax: opts.RetryWaitMax,
		RetryMax:     opts.RetryMax,
		CheckRetry:   checkRetry,
		Backoff:      retryablehttp.DefaultBackoff,
		ErrorHandler: giveUp,
	}
	if opts.Logger != nil {
		rc.Logger = retryLogger{opts.Logger}
	}
	return rc
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

// retryLogger adapts slog to retryablehttp's LeveledLogger. Everything goes
// to debug: failures that matter are returned to the caller. retryablehttp
// logs method and URL only; the credential is in a header and never logged.
type retryLogger struct{ l *slog.Logger }

func (r retryLogger) Error(msg string, kv ...any) { r.l.Debug(msg, kv...) }
func (r retryLogger) Info(msg string, kv ...any)  { r.l.Debug(msg, kv...) }
func (r retryLogger) Debug(msg string, kv ...any) { r.l.Debug(msg, kv...) }
func (r retryLogger) Warn(msg string, kv ...any)  { r.l.Debug(msg, kv...) }
