package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Batch fetches many files in one request and calls fn for each, in the
// order of indexes, with the file's size and a reader of exactly that many
// bytes. The size is the source's word: fn should refuse one that differs
// from what it expects (its manifest's) before reading, since a hostile
// source can announce any size up to 2^62. fn should consume the reader;
// what it leaves is discarded. fn is
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
