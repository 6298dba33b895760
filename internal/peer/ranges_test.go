package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// trackedBody is a response body that remembers whether it was closed.
type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

// fakeResponse builds a response as the transport would hand it to
// checkRange. contentLength < 0 means the length is unknown.
func fakeResponse(status int, contentRange string, contentLength int64, body io.Reader, hdr ...string) (*http.Response, *trackedBody) {
	tb := &trackedBody{Reader: body}
	resp := &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header:        http.Header{},
		ContentLength: contentLength,
		Body:          tb,
	}
	if contentRange != "" {
		resp.Header.Set("Content-Range", contentRange)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		resp.Header.Set(hdr[i], hdr[i+1])
	}
	return resp, tb
}

// unitClient is a client for tests that never reach the network.
func unitClient(t *testing.T, opts ClientOptions) *Client {
	t.Helper()
	token, _, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tk := Ticket{Addr: "198.18.0.1:7450", ExportID: "e1", Token: token, Fingerprint: "sha256:" + strings.Repeat("ab", 32)}
	return newTestClient(t, tk, opts)
}

func TestRangeAskHeader(t *testing.T) {
	for _, tc := range []struct {
		ask  rangeAsk
		want string
	}{
		{rangeAsk{pos: 0, n: -1}, ""},
		{rangeAsk{pos: 7, n: -1}, "bytes=7-"},
		{rangeAsk{pos: 0, n: 4}, "bytes=0-3"},
		{rangeAsk{pos: 3, n: 1}, "bytes=3-3"},
		{rangeAsk{pos: 1 << 40, n: 1 << 20}, "bytes=1099511627776-1099512676351"},
	} {
		if got := tc.ask.header(); got != tc.want {
			t.Errorf("%+v: header %q, want %q", tc.ask, got, tc.want)
		}
	}
}

// TestCheckRange covers what ReadRange accepts from one response and how
// much of its body it copies.
func TestCheckRange(t *testing.T) {
	const file = "0123456789"
	c := unitClient(t, ClientOptions{RetryMax: 3})

	cases := []struct {
		name         string
		pos, n, size int64 // the ask; size -1: no earlier answer
		status       int
		contentRange string
		length       int64 // Content-Length; -1: unknown
		body         string
		hdr          []string

		wantErr   string // substring; "" for no error
		wantIs    error  // errors.Is target, if any
		wantTotal int64
		wantEOF   bool
		wantBody  string
		wantRead  error // read failure reported by copy
	}{
		// 206: the range asked for, or its part up to the end of the file.
		{name: "206 exact", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes 3-5/10", length: 3, body: "345",
			wantTotal: 10, wantBody: "345"},
		{name: "206 open-ended", pos: 4, n: -1, size: -1, status: 206, contentRange: "bytes 4-9/10", length: 6, body: "456789",
			wantTotal: 10, wantBody: "456789"},
		{name: "206 clipped at the end of the file", pos: 8, n: 10, size: -1, status: 206, contentRange: "bytes 8-9/10", length: 2, body: "89",
			wantTotal: 10, wantBody: "89"},
		{name: "206 same size as before", pos: 5, n: -1, size: 10, status: 206, contentRange: "bytes 5-9/10", length: 5, body: "56789",
			wantTotal: 10, wantBody: "56789"},

		// 200: the whole file; what precedes the asked position is skipped.
		{name: "200 whole file", pos: 0, n: -1, size: -1, status: 200, length: 10, body: file,
			wantTotal: 10, wantBody: file},
		{name: "200 to a ranged ask", pos: 3, n: 3, size: -1, status: 200, length: 10, body: file,
			wantTotal: 10, wantBody: "345"},
		{name: "200 to an open-ended ask", pos: 6, n: -1, size: -1, status: 200, length: 10, body: file,
			wantTotal: 10, wantBody: "6789"},
		{name: "200 clipped at the end of the file", pos: 8, n: 10, size: -1, status: 200, length: 10, body: file,
			wantTotal: 10, wantBody: "89"},
		{name: "200 without Content-Length", pos: 2, n: -1, size: -1, status: 200, length: -1, body: file,
			wantTotal: -1, wantBody: "23456789"},
		{name: "200 without Content-Length to a ranged ask", pos: 2, n: 3, size: -1, status: 200, length: -1, body: file,
			wantTotal: -1, wantBody: "234"},
		{name: "200 without Content-Length, short", pos: 2, n: 30, size: -1, status: 200, length: -1, body: file,
			wantTotal: -1, wantBody: "23456789"},
		{name: "200 without Content-Length keeps the known size", pos: 2, n: -1, size: 10, status: 200, length: -1, body: file,
			wantTotal: -1, wantBody: "23456789"},
		{name: "200 without Content-Length, longer than the known size", pos: 2, n: -1, size: 10, status: 200, length: -1, body: file + "extra",
			wantTotal: -1, wantBody: "23456789"},
		{name: "200 without Content-Length, longer than the known size, ranged", pos: 2, n: 30, size: 10, status: 200, length: -1, body: file + "extra",
			wantTotal: -1, wantBody: "23456789"},

		// 416: at or past the end of the file.
		{name: "416 at the end", pos: 10, n: -1, size: -1, status: 416, contentRange: "bytes */10",
			wantTotal: 10, wantEOF: true},
		{name: "416 past the end", pos: 11, n: 5, size: 10, status: 416, contentRange: "bytes */10",
			wantTotal: 10, wantEOF: true},
		{name: "416 before the end", pos: 3, n: 3, size: -1, status: 416, contentRange: "bytes */10",
			wantErr: "refused the range"},
		{name: "416 without a size", pos: 3, n: 3, size: -1, status: 416,
			wantErr: "refused the range"},
		{name: "416 malformed", pos: 30, n: 3, size: -1, status: 416, contentRange: "bytes */ten",
			wantErr: "refused the range"},

		// Content-Range that does not match the ask.
		{name: "206 wrong start", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes 2-4/10", length: 3, body: "234",
			wantErr: "not asked for"},
		{name: "206 longer than asked", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes 3-9/10", length: 7, body: "3456789",
			wantErr: "not asked for"},
		{name: "206 without Content-Range", pos: 3, n: 3, size: -1, status: 206, length: 3, body: "345",
			wantErr: "not asked for"},
		{name: "206 not bytes", pos: 3, n: 3, size: -1, status: 206, contentRange: "lines 3-5/10", length: 3, body: "345",
			wantErr: "not asked for"},
		{name: "206 without total", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes 3-5", length: 3, body: "345",
			wantErr: "not asked for"},
		{name: "206 unknown total", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes 3-5/*", length: 3, body: "345",
			wantErr: "not asked for"},
		{name: "206 reversed", pos: 5, n: 3, size: -1, status: 206, contentRange: "bytes 5-3/10", length: 3, body: "345",
			wantErr: "not asked for"},
		{name: "206 past its total", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes 3-5/5", length: 3, body: "345",
			wantErr: "not asked for"},
		{name: "206 negative", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes -3-5/10", length: 3, body: "345",
			wantErr: "not asked for"},

		// The file changed size since an earlier answer.
		{name: "206 changed size", pos: 3, n: 3, size: 12, status: 206, contentRange: "bytes 3-5/10", length: 3, body: "345",
			wantErr: "changed size on the source"},
		{name: "200 changed size", pos: 3, n: 3, size: 12, status: 200, length: 10, body: file,
			wantErr: "changed size on the source"},
		{name: "416 changed size", pos: 12, n: -1, size: 12, status: 416, contentRange: "bytes */10",
			wantErr: "changed size on the source"},

		// Bodies shorter or longer than their headers promise.
		{name: "206 short body", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes 3-5/10", length: 3, body: "34",
			wantTotal: 10, wantBody: "34", wantRead: io.ErrUnexpectedEOF},
		{name: "206 long body", pos: 3, n: 3, size: -1, status: 206, contentRange: "bytes 3-5/10", length: 3, body: "3456789",
			wantTotal: 10, wantBody: "345"},
		{name: "200 short body", pos: 0, n: -1, size: -1, status: 200, length: 10, body: "01234",
			wantTotal: 10, wantBody: "01234", wantRead: io.ErrUnexpectedEOF},
		{name: "200 long body", pos: 0, n: 4, size: -1, status: 200, length: 10, body: file + "extra",
			wantTotal: 10, wantBody: "0123"},
		{name: "200 long body, open-ended", pos: 0, n: -1, size: -1, status: 200, length: 10, body: file + "extra",
			wantTotal: 10, wantBody: file},

		// Other statuses: the retrying client hands back the last answer.
		{name: "429", pos: 0, n: -1, size: -1, status: 429, length: -1, body: "busy",
			wantErr: "stayed busy after 3 retries: busy"},
		{name: "503", pos: 0, n: -1, size: -1, status: 503, length: -1, body: "restarting\n",
			wantErr: "answered 503 Service Unavailable: restarting"},
		{name: "500 without message", pos: 0, n: -1, size: -1, status: 500, length: -1,
			wantErr: "answered 500 Internal Server Error"},
		{name: "401", pos: 0, n: -1, size: -1, status: 401, length: -1, body: "unauthorized",
			wantIs: ErrUnauthorized},
		{name: "403", pos: 0, n: -1, size: -1, status: 403, length: -1,
			wantIs: ErrUnauthorized},
		{name: "404 file unavailable", pos: 0, n: -1, size: -1, status: 404, length: -1,
			body: "file 7 is unavailable on the source: gone", hdr: []string{headerError, errFileUnavailable},
			wantIs: ErrFileUnavailable, wantErr: "file 7 of the export is unavailable on the source: gone"},
		{name: "404 export gone", pos: 0, n: -1, size: -1, status: 404, length: -1,
			wantIs: ErrExportGone},
		{name: "410", pos: 0, n: -1, size: -1, status: 410, length: -1,
			wantIs: ErrExportGone},
		{name: "400", pos: 0, n: -1, size: -1, status: 400, length: -1, body: "bad file index",
			wantErr: "answered 400 Bad Request: bad file index"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := fakeResponse(tc.status, tc.contentRange, tc.length, strings.NewReader(tc.body), tc.hdr...)
			ask := rangeAsk{index: 7, pos: tc.pos, n: tc.n, size: tc.size}
			ans, err := c.checkRange(resp, ask)
			if tc.wantErr != "" || tc.wantIs != nil {
				if err == nil {
					t.Fatalf("accepted: %+v", ans)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %q, want it to contain %q", err, tc.wantErr)
				}
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("error %q is not %v", err, tc.wantIs)
				}
				if !body.closed {
					t.Error("body left open after an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ans.total != tc.wantTotal || ans.eof != tc.wantEOF {
				t.Fatalf("answer %+v, want total %d, eof %v", ans, tc.wantTotal, tc.wantEOF)
			}
			if ans.eof {
				if !body.closed {
					t.Error("body left open for an answer without body")
				}
				return
			}
			if body.closed {
				t.Fatal("body closed before it was read")
			}
			var got bytes.Buffer
			buf := make([]byte, 4) // smaller than the bodies, so copy loops
			n, readErr, writeErr := ans.copy(&got, resp.Body, buf)
			if writeErr != nil {
				t.Fatal(writeErr)
			}
			if !errors.Is(readErr, tc.wantRead) || (tc.wantRead == nil && readErr != nil) {
				t.Errorf("read error %v, want %v", readErr, tc.wantRead)
			}
			if got.String() != tc.wantBody || n != int64(got.Len()) {
				t.Errorf("copied %q (n=%d), want %q", got.String(), n, tc.wantBody)
			}
		})
	}
}

// fakeTransport answers a client's requests from a script, one function per
// request, and records the Range headers asked for.
type fakeTransport struct {
	mu     sync.Mutex
	script []func(req *http.Request) *http.Response
	ranges []string
}

func (f *fakeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ranges = append(f.ranges, req.Header.Get("Range"))
	if len(f.script) == 0 {
		return nil, errors.New("unexpected request")
	}
	next := f.script[0]
	f.script = f.script[1:]
	return next(req), nil
}

// brokenReader yields data, then fails as a cut connection does.
func brokenReader(data string) io.Reader {
	return io.MultiReader(strings.NewReader(data), errReader{io.ErrUnexpectedEOF})
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// lastReadFails returns all of data in one Read together with a failure,
// as a connection cut right after the last byte may.
type lastReadFails struct{ data string }

func (r *lastReadFails) Read(p []byte) (int, error) {
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, io.ErrUnexpectedEOF
}

func answer(status int, contentRange string, length int64, body io.Reader) func(*http.Request) *http.Response {
	return func(req *http.Request) *http.Response {
		resp, _ := fakeResponse(status, contentRange, length, body)
		resp.Request = req
		return resp
	}
}

// TestReadRangeResumeLoop drives ReadRange's resume loop with scripted
// answers: what it asks for after a break, and when it stops.
func TestReadRangeResumeLoop(t *testing.T) {
	const file = "0123456789"
	cases := []struct {
		name       string
		off, n     int64
		script     []func(*http.Request) *http.Response
		wantRanges []string
		want       string
		wantErr    string // substring; "" for success
		wantIs     error
	}{
		{
			name: "resumes from the first byte not written",
			off:  2, n: 6,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 2-7/10", 6, brokenReader("234")),
				answer(206, "bytes 5-7/10", 3, strings.NewReader("567")),
			},
			wantRanges: []string{"bytes=2-7", "bytes=5-7"},
			want:       "234567",
		},
		{
			name: "resumes an open-ended read open-ended",
			off:  0, n: -1,
			script: []func(*http.Request) *http.Response{
				answer(200, "", 10, brokenReader("0123")),
				answer(206, "bytes 4-9/10", 6, strings.NewReader("456789")),
			},
			wantRanges: []string{"", "bytes=4-"},
			want:       file,
		},
		{
			name: "a file that grew between resumes",
			off:  0, n: -1,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 0-9/10", 10, brokenReader("0123")),
				answer(206, "bytes 4-11/12", 8, strings.NewReader("456789ab")),
			},
			wantRanges: []string{"", "bytes=4-"},
			want:       "0123",
			wantErr:    "changed size on the source",
		},
		{
			name: "a file that ended between resumes",
			off:  0, n: -1,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 0-9/10", 10, brokenReader("0123")),
				answer(416, "bytes */4", 0, strings.NewReader("")),
			},
			wantRanges: []string{"", "bytes=4-"},
			want:       "0123",
			wantErr:    "changed size on the source",
		},
		{
			name: "gives up after RetryMax breaks without progress",
			off:  0, n: 4,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 0-3/10", 4, brokenReader("01")),
				answer(206, "bytes 2-3/10", 2, brokenReader("")),
			},
			wantRanges: []string{"bytes=0-3", "bytes=2-3"},
			want:       "01",
			wantErr:    "broke after 2 bytes",
			wantIs:     io.ErrUnexpectedEOF,
		},
		{
			name: "200 without Content-Length to a ranged read",
			off:  2, n: 3,
			script: []func(*http.Request) *http.Response{
				answer(200, "", -1, strings.NewReader(file)),
			},
			wantRanges: []string{"bytes=2-4"},
			want:       "234",
		},
		{
			name: "a break after the last byte asked for",
			off:  0, n: 4,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 0-3/10", 4, &lastReadFails{data: "0123"}),
			},
			wantRanges: []string{"bytes=0-3"},
			want:       "0123",
		},
		{
			name: "a short 206 to a ranged read is resumed",
			off:  2, n: 6,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 2-4/10", 3, strings.NewReader("234")),
				answer(206, "bytes 5-7/10", 3, strings.NewReader("567")),
			},
			wantRanges: []string{"bytes=2-7", "bytes=5-7"},
			want:       "234567",
		},
		{
			name: "a short 206 to an open-ended read is resumed",
			off:  0, n: -1,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 0-3/10", 4, strings.NewReader("0123")),
				answer(206, "bytes 4-9/10", 6, strings.NewReader("456789")),
			},
			wantRanges: []string{"", "bytes=4-"},
			want:       file,
		},
		{
			name: "a source that answers a byte at a time",
			off:  7, n: -1,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 7-7/10", 1, strings.NewReader("7")),
				answer(206, "bytes 8-8/10", 1, strings.NewReader("8")),
				answer(206, "bytes 9-9/10", 1, strings.NewReader("9")),
			},
			wantRanges: []string{"bytes=7-", "bytes=8-", "bytes=9-"},
			want:       "789",
		},
		{
			name: "a short 206 then the file ends early",
			off:  6, n: 10,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 6-7/10", 2, strings.NewReader("67")),
				answer(206, "bytes 8-9/10", 2, strings.NewReader("89")),
			},
			wantRanges: []string{"bytes=6-15", "bytes=8-15"},
			want:       "6789",
			wantIs:     io.EOF,
		},
		{
			name: "a short 206 whose file then changes size",
			off:  0, n: -1,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 0-3/10", 4, strings.NewReader("0123")),
				answer(206, "bytes 4-7/8", 4, strings.NewReader("4567")),
			},
			wantRanges: []string{"", "bytes=4-"},
			want:       "0123",
			wantErr:    "changed size on the source",
		},
		{
			name: "200 without Content-Length short of the range: asks for the rest",
			off:  2, n: 30,
			script: []func(*http.Request) *http.Response{
				answer(200, "", -1, strings.NewReader(file)),
				answer(416, "bytes */10", 0, strings.NewReader("")),
			},
			wantRanges: []string{"bytes=2-31", "bytes=10-31"},
			want:       "23456789",
			wantIs:     io.EOF,
		},
		{
			name: "file ends before the range",
			off:  8, n: 5,
			script: []func(*http.Request) *http.Response{
				answer(206, "bytes 8-9/10", 2, strings.NewReader("89")),
			},
			wantRanges: []string{"bytes=8-12"},
			want:       "89",
			wantIs:     io.EOF,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := unitClient(t, ClientOptions{RetryMax: 1, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond})
			ft := &fakeTransport{script: tc.script}
			c.hc.Transport = ft
			var got bytes.Buffer
			n, err := c.ReadRange(context.Background(), 7, tc.off, tc.n, &got)
			switch {
			case tc.wantErr == "" && tc.wantIs == nil:
				if err != nil {
					t.Fatal(err)
				}
			case err == nil:
				t.Fatalf("no error, want %q / %v", tc.wantErr, tc.wantIs)
			case !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q, want it to contain %q", err, tc.wantErr)
			case tc.wantIs != nil && !errors.Is(err, tc.wantIs):
				t.Errorf("error %q is not %v", err, tc.wantIs)
			}
			if got.String() != tc.want || n != int64(got.Len()) {
				t.Errorf("wrote %q (n=%d), want %q", got.String(), n, tc.want)
			}
			if strings.Join(ft.ranges, ",") != strings.Join(tc.wantRanges, ",") {
				t.Errorf("asked for %q, want %q", ft.ranges, tc.wantRanges)
			}
			if len(ft.script) != 0 {
				t.Errorf("%d scripted answers left", len(ft.script))
			}
		})
	}
}
