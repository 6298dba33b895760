package peer

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"
)

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
