package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The fuzz targets feed hostile input to both ends: the server's request
// parsing (paths and export IDs, the Authorization and Range headers,
// batch bodies) and the client's response parsing (batch frames,
// Content-Range and range answers). The manifest's own decoding is fuzzed
// in internal/manifest (FuzzDecode).

// FuzzParseRange: whatever parseRange accepts lies within the file, and
// the Content-Range the server makes of it parses back the same.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-", "bytes=3-5", "bytes=7-100", "bytes=-3", "bytes=10-", "bytes=5-3",
		"bytes=0-1,3-4", "bytes=x-", "lines=1-2", "bytes=-0", "bytes=9223372036854775807-", "bytes=00-01", "bytes= 1-2"} {
		f.Add(s, int64(10))
	}
	f.Add("bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, spec string, size int64) {
		if size < 0 {
			return // the server refuses a negative size before parsing
		}
		start, length, ok := parseRange(spec, size)
		if !ok {
			return
		}
		if start < 0 || length < 1 || start > size-length {
			t.Fatalf("parseRange(%q, %d) = %d, %d: outside the file", spec, size, start, length)
		}
		cr := fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size)
		first, last, total, ok := parseContentRange(cr)
		if !ok || first != start || last != start+length-1 || total != size {
			t.Fatalf("the server's %q parses back as %d-%d/%d, %v", cr, first, last, total, ok)
		}
	})
}

// FuzzContentRange: whatever the client accepts as a Content-Range is a
// range within its total, in canonical form or not.
func FuzzContentRange(f *testing.F) {
	for _, s := range []string{"bytes 3-5/10", "bytes 0-0/1", "bytes 5-3/10", "bytes 3-5/5", "bytes 3-5", "bytes 3-5/*",
		"bytes -3-5/10", "bytes */10", "bytes */ten", "bytes 01-02/03", "bytes 0-9223372036854775806/9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if first, last, total, ok := parseContentRange(s); ok {
			if first < 0 || first > last || last >= total {
				t.Fatalf("parseContentRange(%q) = %d-%d/%d", s, first, last, total)
			}
		}
		if total, ok := parseUnsatisfiedRange(s); ok && total < 0 {
			t.Fatalf("parseUnsatisfiedRange(%q) = %d", s, total)
		}
	})
}

// FuzzServerRequest sends arbitrary requests to the server's handler: it
// must not panic, must serve content only with the right credential, and
// what it serves must be what the export holds, as its headers say.
func FuzzServerRequest(f *testing.F) {
	file := []byte("0123456789")
	exp, token := newMemExport(f, [][]byte{file, {}})
	id, err := LoadOrCreateIdentity(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	s := NewServer(memExports{"e1": exp}, id, ServerOptions{MaxBatchFiles: 16, MaxBodyBytes: 4096}, nil)
	h := s.Handler()
	auth := "Bearer " + token

	f.Add("GET", "/v1/exports/e1/files/0", auth, "", []byte(nil))
	f.Add("GET", "/v1/exports/e1/files/0", auth, "bytes=3-5", []byte(nil))
	f.Add("GET", "/v1/exports/e1/files/0", auth, "bytes=-3", []byte(nil))
	f.Add("GET", "/v1/exports/e1/files/1", auth, "bytes=0-", []byte(nil))
	f.Add("HEAD", "/v1/exports/e1/files/0", auth, "bytes=1-", []byte(nil))
	f.Add("GET", "/v1/exports/e1/files/07", "bearer "+token, "", []byte(nil))
	f.Add("GET", "/v1/exports/e1/files/-1", auth, "", []byte(nil))
	f.Add("GET", "/v1/exports/e1/files/4294967296", auth, "", []byte(nil))
	f.Add("GET", "/v1/exports/e1/manifest", auth, "", []byte(nil))
	f.Add("GET", "/v1/exports/e1/manifest", "Bearer x", "", []byte(nil))
	f.Add("GET", "/v1/exports/../e1/manifest", auth, "", []byte(nil))
	f.Add("GET", "/v1/exports/e%2F1/manifest", auth, "", []byte(nil))
	f.Add("POST", "/v1/exports/e1/batch", auth, "", []byte(`{"files":[0,1,2]}`))
	f.Add("POST", "/v1/exports/e1/batch", auth, "", []byte(`{"files":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}`))
	f.Add("POST", "/v1/exports/e1/batch", auth, "", []byte(`{"files":[-1]}`))
	f.Add("POST", "/v1/exports/e1/batch", auth, "", []byte(`{"files":[0]} {}`))
	f.Add("POST", "/v1/exports/e1/batch", auth, "", []byte(`{"files":[0],"x":1}`))
	f.Add("POST", "/v1/exports/e1/complete", auth, "", []byte(`{"report":"done"}`))
	f.Add("POST", "/v1/exports/e1/complete", "", "", []byte(`{"report":"done"}`))

	f.Fuzz(func(t *testing.T, method, path, authHdr, rangeHdr string, body []byte) {
		u, err := url.ParseRequestURI(path)
		if err != nil || !validMethod(method) {
			return
		}
		req := &http.Request{
			Method: method, URL: u, RequestURI: path, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Host: "peer", Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		}
		req = req.WithContext(context.Background())
		if authHdr != "" {
			req.Header.Set("Authorization", authHdr)
		}
		if rangeHdr != "" {
			req.Header.Set("Range", rangeHdr)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		resp := rec.Result()
		got := rec.Body.Bytes()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			if scheme, tok, _ := strings.Cut(authHdr, " "); !strings.EqualFold(scheme, "Bearer") || tok != token {
				t.Fatalf("%s %s answered %d with the credential %q", method, path, resp.StatusCode, authHdr)
			}
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s answered %d: %s", method, path, resp.StatusCode, got)
		}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusPartialContent:
			if resp.Header.Get("Content-Type") == contentTypeBatch {
				checkBatchBody(t, got, body, exp.files)
				return
			}
			if !strings.Contains(u.Path, "/files/") {
				return // the manifest
			}
			index, _ := strconv.Atoi(u.Path[strings.LastIndex(u.Path, "/")+1:])
			want := exp.files[index]
			if resp.StatusCode == http.StatusPartialContent {
				first, last, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
				if !ok || total != int64(len(want)) {
					t.Fatalf("Content-Range %q for a file of %d bytes", resp.Header.Get("Content-Range"), len(want))
				}
				want = want[first : last+1]
			}
			if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
				t.Fatalf("Content-Length %s for %d bytes", cl, len(want))
			}
			if method != http.MethodHead && !bytes.Equal(got, want) {
				t.Fatalf("served %q, want %q", got, want)
			}
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// checkBatchBody parses a batch response the server made for the request
// body reqBody: one frame per index asked for, in order, each the file's
// content or an error.
func checkBatchBody(t *testing.T, got, reqBody []byte, files [][]byte) {
	t.Helper()
	var req batchRequest
	if err := json.NewDecoder(bytes.NewReader(reqBody)).Decode(&req); err != nil {
		t.Fatalf("a batch was served for the body %q: %v", reqBody, err)
	}
	for _, want := range req.Files {
		if len(got) < frameHeaderLen {
			t.Fatalf("the stream ends before the frame for file %d", want)
		}
		h, err := parseFrameHeader((*[frameHeaderLen]byte)(got[:frameHeaderLen]))
		if err != nil || int(h.index) != want || h.size > uint64(len(got)-frameHeaderLen) {
			t.Fatalf("frame %+v for file %d: %v", h, want, err)
		}
		payload := got[frameHeaderLen : frameHeaderLen+int(h.size)]
		if h.flags&frameFlagError == 0 && (want >= len(files) || !bytes.Equal(payload, files[want])) {
			t.Fatalf("frame for file %d holds %q", want, payload)
		}
		got = got[frameHeaderLen+int(h.size):]
	}
	if len(got) != 0 {
		t.Fatalf("%d bytes after the last frame", len(got))
	}
}

// FuzzBatchStream gives the client an arbitrary batch response: whatever
// it delivers is in the order asked, each file exactly as long as its
// frame says, and every file asked for is delivered, failed or missing,
// exactly once.
func FuzzBatchStream(f *testing.F) {
	frame := func(index uint32, flags uint8, payload string) []byte {
		var hdr [frameHeaderLen]byte
		frameHeader{index: index, flags: flags, size: uint64(len(payload))}.put(&hdr)
		return append(hdr[:], payload...)
	}
	join := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	f.Add(join(frame(0, 0, "abc"), frame(1, 0, ""), frame(2, frameFlagError, "gone")), uint8(3))
	f.Add(join(frame(0, 0, "abc"), frame(2, 0, "x")), uint8(3))
	f.Add(join(frame(0, 0, "abc")[:8]), uint8(1))
	f.Add(join(frame(0, 0, "abc"), []byte("trailing")), uint8(1))
	f.Add(join(frame(0, 4, "abc")), uint8(1))
	f.Add([]byte{0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0}, uint8(1))
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x10, 0}, uint8(1))
	f.Add([]byte(nil), uint8(2))

	f.Fuzz(func(t *testing.T, stream []byte, n uint8) {
		indexes := make([]int, int(n%8)+1)
		for i := range indexes {
			indexes[i] = i
		}
		c := fuzzClient(t, func(req *http.Request) *http.Response {
			resp, _ := fakeResponse(http.StatusOK, "", int64(len(stream)), bytes.NewReader(stream), "Content-Type", contentTypeBatch)
			resp.Request = req
			return resp
		})
		next := 0
		var delivered int64
		seen := map[int]bool{}
		err := c.Batch(context.Background(), indexes, func(index int, size int64, r io.Reader) error {
			for next < len(indexes) && indexes[next] != index {
				next++
			}
			if next == len(indexes) || seen[index] {
				t.Fatalf("file %d delivered out of order", index)
			}
			seen[index] = true
			if size > int64(len(stream)) {
				return errors.New("too large") // as the copier refuses a size its manifest does not say
			}
			m, err := io.Copy(io.Discard, r)
			delivered += m
			if m > size {
				t.Fatalf("file %d: read %d bytes of a %d-byte frame", index, m, size)
			}
			if err == nil && m != size {
				t.Fatalf("file %d: %d of %d bytes and no error", index, m, size)
			}
			return err
		})
		if delivered > int64(len(stream)) {
			t.Fatalf("delivered %d bytes from a stream of %d", delivered, len(stream))
		}
		var be *BatchError
		if err != nil && !errors.As(err, &be) {
			return // failed before the first frame
		}
		accounted := map[int]int{}
		for i := range seen {
			accounted[i]++
		}
		if be != nil {
			for i := range be.Failed {
				accounted[i]++
			}
			for _, i := range be.Missing {
				accounted[i]++
			}
			// The file in progress when fn failed is both delivered and missing.
			if be.Err != nil && len(be.Missing) > 0 && seen[be.Missing[0]] {
				accounted[be.Missing[0]]--
			}
		}
		for _, i := range indexes {
			if accounted[i] != 1 {
				t.Fatalf("file %d accounted for %d times (err %v)", i, accounted[i], err)
			}
		}
	})
}

// FuzzReadRange answers every request of ReadRange with one arbitrary
// response: it must end, never write more than asked, and never past the
// end the source reported.
func FuzzReadRange(f *testing.F) {
	f.Add(int64(2), int64(6), 206, "bytes 2-7/10", int64(6), []byte("234567"))
	f.Add(int64(2), int64(6), 206, "bytes 2-4/10", int64(3), []byte("234"))
	f.Add(int64(0), int64(-1), 200, "", int64(10), []byte("0123456789"))
	f.Add(int64(0), int64(-1), 200, "", int64(-1), []byte("0123456789"))
	f.Add(int64(3), int64(4), 200, "", int64(-1), []byte("0123456789extra"))
	f.Add(int64(10), int64(-1), 416, "bytes */10", int64(0), []byte(nil))
	f.Add(int64(3), int64(3), 416, "bytes */10", int64(0), []byte(nil))
	f.Add(int64(3), int64(3), 206, "bytes 3-9/10", int64(7), []byte("3456789"))
	f.Add(int64(0), int64(5), 503, "", int64(-1), []byte("busy"))

	f.Fuzz(func(t *testing.T, off, n int64, status int, contentRange string, length int64, body []byte) {
		if off < 0 || status < 100 || status > 599 || length < -1 {
			return
		}
		requests := 0
		c := fuzzClient(t, func(req *http.Request) *http.Response {
			requests++
			if requests > 64 {
				t.Fatalf("ReadRange made %d requests to one answer", requests)
			}
			resp, _ := fakeResponse(status, contentRange, length, io.LimitReader(bytes.NewReader(body), max(length, int64(len(body)))))
			resp.Request = req
			return resp
		})
		var w bytes.Buffer
		written, _ := c.ReadRange(context.Background(), 0, off, n, &w)
		if written != int64(w.Len()) {
			t.Fatalf("returned %d, wrote %d", written, w.Len())
		}
		if n > 0 && written > n {
			t.Fatalf("wrote %d bytes of %d asked", written, n)
		}
		if _, last, total, ok := parseContentRange(contentRange); ok && status == http.StatusPartialContent && written > 0 && off+written > min(total, last+1) {
			t.Fatalf("wrote up to %d, past the %d the source answered", off+written, min(total, last+1))
		}
		if status == http.StatusOK && length >= 0 && written > 0 && off+written > length {
			t.Fatalf("wrote up to %d of a file of %d", off+written, length)
		}
	})
}

// fuzzClient is a client whose requests answer returns, without retries.
func fuzzClient(t *testing.T, answer func(*http.Request) *http.Response) *Client {
	token, _, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tk := Ticket{Addr: "198.18.0.1:7450", ExportID: "e1", Token: token, Fingerprint: "sha256:" + strings.Repeat("ab", 32)}
	c, err := NewClient(tk, ClientOptions{RetryMax: -1, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.hc.Transport = roundTripFunc(func(req *http.Request) (*http.Response, error) { return answer(req), nil })
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
