package peer

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// ReadRange copies bytes [off, off+n) of file index into w (n < 0: to the
// end of the file) and returns how many bytes it wrote.
//
// If the response body breaks (connection reset, unexpected EOF, dead
// HTTP/2 connection), ReadRange continues with a new Range request from the
// first byte not yet written, with backoff, so w receives every byte exactly
// once. The retry budget restarts whenever an attempt made progress.
//
// An answer that is whole but ends before both the range and the file do
// (a 206 for less than was asked) is not the end either: ReadRange asks
// for the rest.
//
// Like io.ReaderAt, if the file ends before off+n, ReadRange writes what
// there is and returns io.EOF; with n < 0 reaching the end is success. A
// failing w stops ReadRange at once with w's error. It never writes more
// than n bytes; with n < 0, no more than the size the source reported, or,
// if it reported none (a 200 without Content-Length), what its body holds.
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
		ask := rangeAsk{index: index, pos: off + written, n: -1, size: size}
		if n > 0 {
			ask.n = n - written
		}
		resp, err := c.do(ctx, http.MethodGet, path, nil, ask.header())
		if err != nil {
			return written, err
		}
		ans, err := c.checkRange(resp, ask)
		if err != nil {
			return written, err
		}
		if ans.eof {
			// ask.pos is at or past the end of the file.
			if n > 0 || ask.pos > ans.total {
				return written, io.EOF
			}
			return written, nil
		}
		if ans.total >= 0 {
			size = ans.total
		}
		m, readErr, writeErr := ans.copy(w, resp.Body, *buf)
		resp.Body.Close()
		written += m
		if writeErr != nil {
			return written, writeErr
		}
		// Where this read ends: the end of the range or of the file,
		// whichever comes first; -1 while neither is known.
		end := int64(-1)
		if n > 0 {
			end = off + n
		}
		if size >= 0 && (end < 0 || size < end) {
			end = size
		}
		pos := off + written
		switch {
		case end >= 0 && pos >= end, end < 0 && readErr == nil:
			// All of it. A break after the last byte costs nothing;
			// resuming would ask for the rest of the file.
			if n > 0 && written < n {
				return written, io.EOF // the file ends before off+n
			}
			return written, nil
		case readErr == nil && m > 0:
			// The answer was whole but ends before the range and the file
			// do (a 206 for less than asked): ask for the rest at once.
			// Each such answer moves on, so this ends with the file.
			failures = 0
			c.log.Debug("the source answered a part of the range; asking for the rest", "index", index, "offset", pos)
			continue
		case readErr == nil:
			readErr = io.ErrUnexpectedEOF // an empty answer short of the end
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

// rangeAsk is what one request of ReadRange asks for.
type rangeAsk struct {
	index int
	pos   int64 // first byte wanted
	n     int64 // bytes wanted from pos; -1: to the end of the file
	size  int64 // file size an earlier answer reported; -1: none yet
}

// header is the Range header for the ask; none when it wants the whole file.
func (a rangeAsk) header() string {
	switch {
	case a.n > 0:
		return fmt.Sprintf("bytes=%d-%d", a.pos, a.pos+a.n-1)
	case a.pos > 0:
		return fmt.Sprintf("bytes=%d-", a.pos)
	}
	return ""
}

// rangeAnswer is what a response promises for a rangeAsk.
type rangeAnswer struct {
	total  int64 // file size the source reported; -1: unknown
	skip   int64 // body bytes before the asked range (a 200 carries the whole file)
	expect int64 // body bytes of the range after skip; -1: to the end of the body
	atMost int64 // with expect -1, the most bytes to copy; -1: no bound
	eof    bool  // the asked position is at or past the end of the file; no body
}

// checkRange checks resp against ask: its status, and its Content-Range or
// Content-Length against the range asked for and the size reported before,
// and says which part of the body is the range. It closes the body when it
// returns an error or an answer without body (eof).
func (c *Client) checkRange(resp *http.Response, ask rangeAsk) (rangeAnswer, error) {
	var ans rangeAnswer
	switch resp.StatusCode {
	case http.StatusOK: // whole file: the server ignored or was not sent a Range
		ans = rangeAnswer{total: resp.ContentLength, skip: ask.pos, expect: -1, atMost: ask.n}
		if ans.total >= 0 {
			ans.expect = max(ans.total-ask.pos, 0)
			if ask.n > 0 {
				ans.expect = min(ans.expect, ask.n)
			}
		} else if ask.size >= 0 {
			// No length now, but an earlier answer said where the file ends.
			ans.atMost = max(ask.size-ask.pos, 0)
			if ask.n > 0 {
				ans.atMost = min(ans.atMost, ask.n)
			}
		}
	case http.StatusPartialContent:
		first, last, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != ask.pos || (ask.n > 0 && last-first+1 > ask.n) {
			drainClose(resp.Body)
			return rangeAnswer{}, fmt.Errorf("reading file %d: %s answered with a range (%q) that was not asked for",
				ask.index, c.where(), resp.Header.Get("Content-Range"))
		}
		ans = rangeAnswer{total: total, expect: last - first + 1, atMost: -1}
	case http.StatusRequestedRangeNotSatisfiable:
		total, ok := parseUnsatisfiedRange(resp.Header.Get("Content-Range"))
		drainClose(resp.Body)
		if !ok || ask.pos < total {
			return rangeAnswer{}, fmt.Errorf("reading file %d at offset %d: %s refused the range", ask.index, ask.pos, c.where())
		}
		ans = rangeAnswer{total: total, eof: true, atMost: -1}
	default:
		return rangeAnswer{}, c.statusError(resp, fmt.Sprintf("reading file %d", ask.index), ask.index)
	}
	if ans.total >= 0 && ask.size >= 0 && ans.total != ask.size {
		if !ans.eof {
			drainClose(resp.Body)
		}
		return rangeAnswer{}, c.sizeChanged(ask.index, ask.size, ans.total)
	}
	return ans, nil
}

// copy copies the answer's range from body to w. Read and write failures
// are reported apart, as by copyStream.
func (a rangeAnswer) copy(w io.Writer, body io.Reader, buf []byte) (written int64, readErr, writeErr error) {
	if a.skip > 0 {
		if _, err := io.CopyN(io.Discard, body, a.skip); err != nil {
			return 0, err, nil
		}
	}
	if a.expect < 0 && a.atMost >= 0 {
		body = io.LimitReader(body, a.atMost) // a body of unknown length holds no more than was asked
	}
	return copyStream(w, body, a.expect, buf)
}

func (c *Client) sizeChanged(index int, was, now int64) error {
	return fmt.Errorf("file %d changed size on the source while being copied (%d bytes, now %d): the export is not frozen",
		index, was, now)
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
