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
