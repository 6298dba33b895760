package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestFingerprintPinning(t *testing.T) {
	exp, token := newMemExport(t, [][]byte{[]byte("hello")})
	ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil)

	t.Run("right fingerprint", func(t *testing.T) {
		c := newTestClient(t, ts.ticket("e1", token), ClientOptions{})
		var buf bytes.Buffer
		if _, err := c.ReadRange(context.Background(), 0, 0, -1, &buf); err != nil {
			t.Fatal(err)
		}
		if buf.String() != "hello" {
			t.Fatalf("got %q", buf.String())
		}
	})

	t.Run("wrong fingerprint", func(t *testing.T) {
		other, err := LoadOrCreateIdentity(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		tk := ts.ticket("e1", token)
		tk.Fingerprint = other.Fingerprint()
		var retries atomic.Int64
		c := newTestClient(t, tk, ClientOptions{OnRetry: func(error) { retries.Add(1) }})
		_, err = c.ReadRange(context.Background(), 0, 0, -1, io.Discard)
		if !errors.Is(err, ErrFingerprintMismatch) {
			t.Fatalf("want ErrFingerprintMismatch, got %v", err)
		}
		var fe *FingerprintError
		if !errors.As(err, &fe) || fe.Expected != other.Fingerprint() || fe.Got != ts.id.Fingerprint() {
			t.Fatalf("want FingerprintError with expected/got, got %#v", fe)
		}
		msg := err.Error()
		for _, want := range []string{"did not match", other.Fingerprint(), ts.id.Fingerprint()} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not mention %q", msg, want)
			}
		}
		if retries.Load() != 0 {
			t.Errorf("a fingerprint mismatch was retried %d times", retries.Load())
		}
	})

	t.Run("plain HTTP to the TLS port", func(t *testing.T) {
		resp, err := http.Get("http://" + ts.addr + "/v1/exports/e1/files/0")
		if err == nil {
			defer resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatal("plain HTTP was served")
			}
		}
	})

	t.Run("pinned client to a plain TCP server", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
				c.Close()
			}
		}()
		tk := ts.ticket("e1", token)
		tk.Addr = l.Addr().String()
		c := newTestClient(t, tk, ClientOptions{RetryMax: -1})
		if _, err := c.ReadRange(context.Background(), 0, 0, -1, io.Discard); err == nil {
			t.Fatal("a non-TLS server was accepted")
		}
	})

	t.Run("negotiates HTTP/2 and TLS 1.3", func(t *testing.T) {
		req, _ := http.NewRequest("GET", ts.url("/v1/exports/e1/manifest"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := ts.rawClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("protocol %s, want HTTP/2", resp.Proto)
		}
		if resp.TLS.Version != tls.VersionTLS13 {
			t.Errorf("TLS version %x", resp.TLS.Version)
		}
	})

	t.Run("TLS 1.2 refused", func(t *testing.T) {
		conf, _ := PinnedTLSConfig(ts.id.Fingerprint())
		conf.MinVersion, conf.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		conn, err := tls.Dial("tcp", ts.addr, conf)
		if err == nil {
			conn.Close()
			t.Fatal("TLS 1.2 handshake succeeded")
		}
	})
}

func TestAuth(t *testing.T) {
	e1, tok1 := newMemExport(t, [][]byte{[]byte("one")})
	e2, tok2 := newMemExport(t, [][]byte{[]byte("two")})
	var logs syncBuffer
	log := debugLogger(&logs)
	ts := startServer(t, memExports{"e1": e1, "e2": e2}, ServerOptions{}, log)
	hc := ts.rawClient(t)

	cases := []struct {
		name   string
		export string
		auth   string
		want   int
	}{
		{"no token", "e1", "", http.StatusUnauthorized},
		{"wrong token", "e1", "Bearer " + strings.Repeat("A", 43), http.StatusUnauthorized},
		{"other export's token", "e1", "Bearer " + tok2, http.StatusUnauthorized},
		{"unknown export", "nope", "Bearer " + tok1, http.StatusUnauthorized},
		{"invalid export id", "..x", "Bearer " + tok1, http.StatusUnauthorized},
		{"basic scheme", "e1", "Basic " + tok1, http.StatusUnauthorized},
		{"right token", "e1", "Bearer " + tok1, http.StatusOK},
		{"scheme case-insensitive", "e2", "bearer " + tok2, http.StatusOK},
	}
	var unauthorizedBodies []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", ts.url("/v1/exports/"+tc.export+"/files/0"), nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
			}
			if tc.want == http.StatusUnauthorized {
				unauthorizedBodies = append(unauthorizedBodies, string(body))
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate header")
				}
			}
		})
	}
	for _, b := range unauthorizedBodies {
		if b != unauthorizedBodies[0] {
			t.Errorf("401 bodies differ: %q vs %q", b, unauthorizedBodies[0])
		}
	}

	t.Run("client maps 401 to ErrUnauthorized without retrying", func(t *testing.T) {
		var retries atomic.Int64
		tk := ts.ticket("e1", tok2)
		c := newTestClient(t, tk, ClientOptions{Logger: log, OnRetry: func(error) { retries.Add(1) }})
		ctx := context.Background()
		_, err := c.Manifest(ctx)
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Manifest: %v", err)
		}
		if !strings.Contains(err.Error(), ts.addr) || strings.Contains(err.Error(), tok2) {
			t.Errorf("error should name the address and not the token: %v", err)
		}
		if _, err := c.ReadRange(ctx, 0, 0, -1, io.Discard); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("ReadRange: %v", err)
		}
		if err := c.Batch(ctx, []int{0}, nil); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("Batch: %v", err)
		}
		if err := c.Complete(ctx, "x"); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("Complete: %v", err)
		}
		if retries.Load() != 0 {
			t.Errorf("401 retried %d times", retries.Load())
		}
	})

	t.Run("tokens never logged", func(t *testing.T) {
		c := newTestClient(t, ts.ticket("e1", tok1), ClientOptions{Logger: log})
		if _, err := c.ReadRange(context.Background(), 0, 0, -1, io.Discard); err != nil {
			t.Fatal(err)
		}
		out := logs.String()
		if !strings.Contains(out, "peer request") {
			t.Fatalf("expected request logs, got %q", out)
		}
		for _, tok := range []string{tok1, tok2} {
			if strings.Contains(out, tok) {
				t.Fatalf("token found in logs:\n%s", out)
			}
		}
	})
}

func TestRoutes(t *testing.T) {
	exp, token := newMemExport(t, [][]byte{[]byte("abc")})
	ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil)
	hc := ts.rawClient(t)
	cases := []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/exports/e1/nothing", http.StatusNotFound},
		{"GET", "/", http.StatusNotFound},
		{"GET", "/v1/exports/e1/files/0/x", http.StatusNotFound},
		{"POST", "/v1/exports/e1/manifest", http.StatusMethodNotAllowed},
		{"GET", "/v1/exports/e1/batch", http.StatusMethodNotAllowed},
		{"DELETE", "/v1/exports/e1/files/0", http.StatusMethodNotAllowed},
		{"GET", "/v1/exports/e1/files/-1", http.StatusBadRequest},
		{"GET", "/v1/exports/e1/files/+1", http.StatusBadRequest},
		{"GET", "/v1/exports/e1/files/99999999999", http.StatusBadRequest},
		{"GET", "/v1/exports/e1/files/7", http.StatusNotFound},
		{"GET", "/v1/exports/e1/files/0", http.StatusOK},
		{"HEAD", "/v1/exports/e1/files/0", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.url(tc.path), nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestManifestAndComplete(t *testing.T) {
	exp, token := newMemExport(t, nil)
	exp.manifest = bytes.Repeat([]byte("m"), 1<<20)
	broken, token2 := newMemExport(t, nil)
	broken.manifest = nil
	ts := startServer(t, memExports{"e1": exp, "e2": broken}, ServerOptions{}, nil)
	ctx := context.Background()

	c := newTestClient(t, ts.ticket("e1", token), ClientOptions{})
	rc, err := c.Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, exp.manifest) {
		t.Fatalf("manifest: %d bytes, err %v", len(got), err)
	}
	if err := c.Complete(ctx, "copied 0 files"); err != nil {
		t.Fatal(err)
	}
	exp.mu.Lock()
	reports := exp.reports
	exp.mu.Unlock()
	if len(reports) != 1 || reports[0] != "copied 0 files" {
		t.Fatalf("reports %q", reports)
	}

	c2 := newTestClient(t, ts.ticket("e2", token2), ClientOptions{RetryMax: 1})
	if _, err := c2.Manifest(ctx); err == nil || !strings.Contains(err.Error(), "manifest not ready") {
		t.Fatalf("want the source's error, got %v", err)
	}

	t.Run("complete body too large", func(t *testing.T) {
		err := c.Complete(ctx, strings.Repeat("x", 2<<20))
		if err == nil || !strings.Contains(err.Error(), "413") {
			t.Fatalf("want 413, got %v", err)
		}
	})

	// The body delivers exactly MaxManifestBytes, and fails rather than
	// ends past them: streamed (no Content-Length) as the 1 MiB one is,
	// or announced with a Content-Length, as a small one is.
	small, token3 := newMemExport(t, nil)
	small.manifest = []byte("0123456789")
	ts2 := startServer(t, memExports{"e1": exp, "e3": small}, ServerOptions{}, nil)
	for _, tc := range []struct {
		name   string
		tk     Ticket
		max    int64
		wantOK bool
	}{
		{"streamed, at the limit", ts2.ticket("e1", token), 1 << 20, true},
		{"streamed, over the limit", ts2.ticket("e1", token), 1<<20 - 1, false},
		{"with a length, at the limit", ts2.ticket("e3", token3), 10, true},
		{"with a length, over the limit", ts2.ticket("e3", token3), 9, false},
	} {
		t.Run("MaxManifestBytes "+tc.name, func(t *testing.T) {
			c := newTestClient(t, tc.tk, ClientOptions{MaxManifestBytes: tc.max})
			rc, err := c.Manifest(ctx)
			var got []byte
			if err == nil {
				got, err = io.ReadAll(rc)
				rc.Close()
			}
			switch {
			case tc.wantOK && err != nil:
				t.Fatal(err)
			case tc.wantOK && int64(len(got)) != tc.max:
				t.Fatalf("%d bytes", len(got))
			case !tc.wantOK && !errors.Is(err, ErrManifestTooLarge):
				t.Fatalf("err = %v, want ErrManifestTooLarge", err)
			case !tc.wantOK && int64(len(got)) > tc.max:
				t.Fatalf("delivered %d bytes, more than %d", len(got), tc.max)
			}
		})
	}
}

func TestReadRange(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	big := randomBytes(r, 3<<20+17)
	small := []byte("0123456789")
	exp, token := newMemExport(t, [][]byte{big, small, {}})
	ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil)
	c := newTestClient(t, ts.ticket("e1", token), ClientOptions{})
	ctx := context.Background()

	cases := []struct {
		name    string
		index   int
		off, n  int64
		want    []byte
		wantErr error
	}{
		{"full", 0, 0, -1, big, nil},
		{"full small", 1, 0, -1, small, nil},
		{"partial", 1, 2, 3, small[2:5], nil},
		{"partial big", 0, 1 << 20, 1 << 20, big[1<<20 : 2<<20], nil},
		{"open-ended", 1, 4, -1, small[4:], nil},
		{"prefix", 1, 0, 4, small[:4], nil},
		{"exact to end", 1, 5, 5, small[5:], nil},
		{"past end clipped", 1, 8, 10, small[8:], io.EOF},
		{"at end open-ended", 1, 10, -1, nil, nil},
		{"beyond end", 1, 11, -1, nil, io.EOF},
		{"beyond end bounded", 1, 20, 5, nil, io.EOF},
		{"zero-length file", 2, 0, -1, nil, nil},
		{"zero-length file range", 2, 0, 10, nil, io.EOF},
		{"zero n", 1, 3, 0, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := c.ReadRange(ctx, tc.index, tc.off, tc.n, &buf)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if n != int64(buf.Len()) || !bytes.Equal(buf.Bytes(), tc.want) {
				t.Fatalf("got %d bytes (n=%d), want %d", buf.Len(), n, len(tc.want))
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := c.ReadRange(ctx, 9, 0, -1, io.Discard)
		var fe *FileError
		if !errors.Is(err, ErrFileUnavailable) || !errors.As(err, &fe) || fe.Index != 9 {
			t.Fatalf("want FileError for 9, got %v", err)
		}
		if errors.Is(err, ErrExportGone) {
			t.Fatal("a missing file must not look like a gone export")
		}
	})

	t.Run("raw ranges", func(t *testing.T) {
		hc := ts.rawClient(t)
		raw := []struct {
			index        int
			rng          string
			status       int
			contentRange string
			body         string
		}{
			{1, "", 200, "", "0123456789"},
			{1, "bytes=0-", 206, "bytes 0-9/10", "0123456789"},
			{1, "bytes=3-5", 206, "bytes 3-5/10", "345"},
			{1, "bytes=7-100", 206, "bytes 7-9/10", "789"},
			{1, "bytes=-3", 206, "bytes 7-9/10", "789"},
			{1, "bytes=10-", 416, "bytes */10", ""},
			{1, "bytes=5-3", 416, "bytes */10", ""},
			{1, "bytes=0-1,3-4", 416, "bytes */10", ""},
			{1, "bytes=x-", 416, "bytes */10", ""},
			{1, "lines=1-2", 416, "bytes */10", ""},
			{2, "", 200, "", ""},
			{2, "bytes=0-", 416, "bytes */0", ""},
		}
		for _, tc := range raw {
			req, _ := http.NewRequest("GET", ts.url(fmt.Sprintf("/v1/exports/e1/files/%d", tc.index)), nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Range") != tc.contentRange {
				t.Errorf("%d %q: status %d, Content-Range %q", tc.index, tc.rng, resp.StatusCode, resp.Header.Get("Content-Range"))
			}
			if tc.status < 300 && string(body) != tc.body {
				t.Errorf("%d %q: body %q", tc.index, tc.rng, body)
			}
		}
	})
	if o, c := exp.opened.Load(), exp.closed.Load(); o != c {
		t.Errorf("opened %d files, closed %d", o, c)
	}
}

func TestBatch(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	files := make([][]byte, 1000)
	for i := range files {
		files[i] = randomBytes(r, r.IntN(8<<10+1))
	}
	exp, token := newMemExport(t, files)
	exp.openErr = map[int]error{500: errors.New("file vanished")}
	ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil)
	c := newTestClient(t, ts.ticket("e1", token), ClientOptions{})
	ctx := context.Background()

	t.Run("many small files in order", func(t *testing.T) {
		indexes := make([]int, 0, len(files))
		for i := range files {
			if i != 500 {
				indexes = append(indexes, i)
			}
		}
		r.Shuffle(len(indexes), func(i, j int) { indexes[i], indexes[j] = indexes[j], indexes[i] })
		var got []int
		err := c.Batch(ctx, indexes, func(index int, size int64, rd io.Reader) error {
			b, err := io.ReadAll(rd)
			if err != nil {
				return err
			}
			if int64(len(b)) != size || !bytes.Equal(b, files[index]) {
				return fmt.Errorf("file %d: content mismatch", index)
			}
			got = append(got, index)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(indexes) {
			t.Fatal("files arrived out of order")
		}
	})

	t.Run("error frame and the rest still arrive", func(t *testing.T) {
		var got []int
		err := c.Batch(ctx, []int{499, 500, 501, 5000}, func(index int, _ int64, rd io.Reader) error {
			b, _ := io.ReadAll(rd)
			if !bytes.Equal(b, files[index]) {
				return fmt.Errorf("file %d: content mismatch", index)
			}
			got = append(got, index)
			return nil
		})
		var be *BatchError
		if !errors.As(err, &be) {
			t.Fatalf("want *BatchError, got %v", err)
		}
		if len(be.Failed) != 2 || !strings.Contains(be.Failed[500], "file vanished") || be.Failed[5000] == "" {
			t.Errorf("Failed = %v", be.Failed)
		}
		if len(be.Missing) != 0 || be.Err != nil {
			t.Errorf("Missing %v, Err %v", be.Missing, be.Err)
		}
		if fmt.Sprint(got) != "[499 501]" {
			t.Errorf("delivered %v", got)
		}
	})

	t.Run("fn reads only part", func(t *testing.T) {
		var got []int
		err := c.Batch(ctx, []int{10, 11, 12}, func(index int, size int64, rd io.Reader) error {
			got = append(got, index)
			_, err := io.ReadFull(rd, make([]byte, min(size, 3)))
			return err
		})
		if err != nil || fmt.Sprint(got) != "[10 11 12]" {
			t.Fatalf("err %v, got %v", err, got)
		}
	})

	t.Run("fn error stops the batch", func(t *testing.T) {
		boom := errors.New("disk full")
		err := c.Batch(ctx, []int{1, 2, 3}, func(index int, _ int64, _ io.Reader) error {
			if index == 2 {
				return boom
			}
			return nil
		})
		var be *BatchError
		if !errors.Is(err, boom) || !errors.As(err, &be) || fmt.Sprint(be.Missing) != "[2 3]" {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("empty list", func(t *testing.T) {
		if err := c.Batch(ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		// The server accepts an empty list too.
		resp := postRaw(t, ts, token, "/v1/exports/e1/batch", `{"files":[]}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})

	t.Run("larger than one request", func(t *testing.T) {
		indexes := make([]int, DefaultMaxBatchFiles+100)
		for i := range indexes {
			indexes[i] = i % 10
		}
		n := 0
		err := c.Batch(ctx, indexes, func(index int, _ int64, _ io.Reader) error {
			if index != indexes[n] {
				return fmt.Errorf("got %d at %d", index, n)
			}
			n++
			return nil
		})
		if err != nil || n != len(indexes) {
			t.Fatalf("err %v, delivered %d", err, n)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		tooMany := make([]string, DefaultMaxBatchFiles+1)
		for i := range tooMany {
			tooMany[i] = "1"
		}
		cases := []struct {
			name, body string
			want       int
		}{
			{"too many files", `{"files":[` + strings.Join(tooMany, ",") + `]}`, http.StatusRequestEntityTooLarge},
			{"body too large", `{"files":[` + strings.Repeat(" ", 1<<20) + `]}`, http.StatusRequestEntityTooLarge},
			{"negative index", `{"files":[-1]}`, http.StatusBadRequest},
			{"huge index", `{"files":[4294967296]}`, http.StatusBadRequest},
			{"not json", `files=1`, http.StatusBadRequest},
			{"unknown field", `{"files":[1],"paths":["/etc/passwd"]}`, http.StatusBadRequest},
			{"trailing data", `{"files":[1]} {}`, http.StatusBadRequest},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				resp := postRaw(t, ts, token, "/v1/exports/e1/batch", tc.body)
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
				}
			})
		}
	})
	if o, c := exp.opened.Load(), exp.closed.Load(); o != c {
		t.Errorf("opened %d files, closed %d", o, c)
	}
}

func postRaw(t *testing.T, ts *testServer, token, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", ts.url(path), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ts.rawClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// protocols runs f once over HTTP/2 and once over HTTP/1.1: broken
// transfers look different on the wire for each.
func protocols(t *testing.T, f func(t *testing.T, forceHTTP1 bool)) {
	t.Run("h2", func(t *testing.T) { f(t, false) })
	t.Run("h1", func(t *testing.T) { f(t, true) })
}

func TestForceHTTP1(t *testing.T) {
	exp, token := newMemExport(t, [][]byte{[]byte("x")})
	for _, h1 := range []bool{false, true} {
		var logs syncBuffer
		ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, debugLogger(&logs))
		c := newTestClient(t, ts.ticket("e1", token), ClientOptions{ForceHTTP1: h1})
		if _, err := c.ReadRange(context.Background(), 0, 0, -1, io.Discard); err != nil {
			t.Fatal(err)
		}
		want := "proto=HTTP/2.0"
		if h1 {
			want = "proto=HTTP/1.1"
		}
		if !strings.Contains(logs.String(), want) {
			t.Errorf("ForceHTTP1=%v: want %s in %s", h1, want, logs.String())
		}
	}
}

func TestShrunkFileAbortsStream(t *testing.T) { protocols(t, testShrunkFileAbortsStream) }

func testShrunkFileAbortsStream(t *testing.T, forceHTTP1 bool) {
	files := [][]byte{[]byte("aaaa"), bytes.Repeat([]byte("b"), 100), []byte("cccc")}
	exp, token := newMemExport(t, files)
	exp.shrunk = map[int]int64{1: 1 << 20} // claims 1 MiB, has 100 bytes
	ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil)
	c := newTestClient(t, ts.ticket("e1", token), ClientOptions{RetryMax: 2, ForceHTTP1: forceHTTP1})
	ctx := context.Background()

	var got []int
	err := c.Batch(ctx, []int{0, 1, 2}, func(index int, _ int64, rd io.Reader) error {
		if _, err := io.Copy(io.Discard, rd); err != nil {
			return err
		}
		got = append(got, index)
		return nil
	})
	var be *BatchError
	if !errors.As(err, &be) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("want a broken-stream BatchError, got %v", err)
	}
	if fmt.Sprint(got) != "[0]" || fmt.Sprint(be.Missing) != "[1 2]" {
		t.Fatalf("delivered %v, missing %v", got, be.Missing)
	}

	var buf bytes.Buffer
	n, err := c.ReadRange(ctx, 1, 0, -1, &buf)
	if err == nil {
		t.Fatal("a truncated file was reported complete")
	}
	if n != 100 || !bytes.Equal(buf.Bytes(), files[1]) {
		t.Fatalf("wrote %d bytes", n)
	}
}

func TestReadRangeResumesBrokenBody(t *testing.T) { protocols(t, testReadRangeResumesBrokenBody) }

func testReadRangeResumesBrokenBody(t *testing.T, forceHTTP1 bool) {
	r := rand.New(rand.NewPCG(5, 6))
	data := randomBytes(r, 8<<20)
	exp, token := newMemExport(t, [][]byte{data})

	for _, tc := range []struct {
		name  string
		flaky int64
		off   int64
		n     int64
	}{
		{"first connections break", 3, 0, -1},
		{"every connection breaks", 1000, 0, -1},
		{"bounded range", 2, 12345, 5 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cl *cutListener
			ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil, func(l net.Listener) net.Listener {
				cl = &cutListener{Listener: l, limit: 1 << 20}
				cl.flaky.Store(tc.flaky)
				return cl
			})
			var retries atomic.Int64
			c := newTestClient(t, ts.ticket("e1", token), ClientOptions{
				RetryMax: 3, ForceHTTP1: forceHTTP1, OnRetry: func(error) { retries.Add(1) }})
			var buf bytes.Buffer
			n, err := c.ReadRange(context.Background(), 0, tc.off, tc.n, &buf)
			if err != nil {
				t.Fatal(err)
			}
			want := data[tc.off:]
			if tc.n >= 0 {
				want = want[:tc.n]
			}
			if n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("got %d bytes, want %d", n, len(want))
			}
			if cl.cuts.Load() == 0 || retries.Load() == 0 {
				t.Fatalf("no connection was cut (cuts %d, retries %d)", cl.cuts.Load(), retries.Load())
			}
			t.Logf("%d cuts, %d retries", cl.cuts.Load(), retries.Load())
		})
	}
}

func TestConcurrencyLimit(t *testing.T) {
	exp, token := newMemExport(t, [][]byte{[]byte("slow"), []byte("fast")})
	entered := make(chan struct{})
	release := make(chan struct{})
	exp.openHook = func(_ context.Context, index int) {
		if index == 0 {
			close(entered)
			<-release
		}
	}
	ts := startServer(t, memExports{"e1": exp}, ServerOptions{MaxConcurrentPerExport: 1}, nil)
	ctx := context.Background()

	slow := newTestClient(t, ts.ticket("e1", token), ClientOptions{})
	slowDone := make(chan error, 1)
	go func() {
		_, err := slow.ReadRange(ctx, 0, 0, -1, io.Discard)
		slowDone <- err
	}()
	<-entered

	// Directly: 429 with Retry-After.
	req, _ := http.NewRequest("GET", ts.url("/v1/exports/e1/files/1"), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ts.rawClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// Through the client: retried after Retry-After, then served.
	var once sync.Once
	var lastErr atomic.Value
	c := newTestClient(t, ts.ticket("e1", token), ClientOptions{OnRetry: func(err error) {
		lastErr.Store(err.Error())
		once.Do(func() { close(release) })
	}})
	start := time.Now()
	var buf bytes.Buffer
	if _, err := c.ReadRange(ctx, 1, 0, -1, &buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "fast" {
		t.Fatalf("got %q", buf.String())
	}
	if s, _ := lastErr.Load().(string); !strings.Contains(s, "429") {
		t.Fatalf("OnRetry saw %q, want a 429", s)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("Retry-After not honoured: retried after %v", d)
	}
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
}

func TestContextCancel(t *testing.T) {
	exp, token := newMemExport(t, [][]byte{[]byte("x")})
	exp.openHook = func(ctx context.Context, _ int) { <-ctx.Done() }
	ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil)
	c := newTestClient(t, ts.ticket("e1", token), ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.ReadRange(ctx, 0, 0, -1, io.Discard); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

func TestBatchBrokenConnection(t *testing.T) { protocols(t, testBatchBrokenConnection) }

func testBatchBrokenConnection(t *testing.T, forceHTTP1 bool) {
	r := rand.New(rand.NewPCG(15, 16))
	files := make([][]byte, 200)
	indexes := make([]int, len(files))
	for i := range files {
		files[i] = randomBytes(r, 8<<10)
		indexes[i] = i
	}
	exp, token := newMemExport(t, files)
	ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil, func(l net.Listener) net.Listener {
		cl := &cutListener{Listener: l, limit: 512 << 10}
		cl.flaky.Store(1)
		return cl
	})
	c := newTestClient(t, ts.ticket("e1", token), ClientOptions{ForceHTTP1: forceHTTP1})
	ctx := context.Background()

	delivered := map[int]bool{}
	fn := func(index int, _ int64, rd io.Reader) error {
		b, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, files[index]) {
			t.Errorf("file %d: content mismatch", index)
		}
		delivered[index] = true
		return nil
	}
	err := c.Batch(ctx, indexes, fn)
	var be *BatchError
	if !errors.As(err, &be) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("want a broken-stream *BatchError, got %v", err)
	}
	if len(be.Missing) == 0 || len(delivered)+len(be.Missing) != len(indexes) {
		t.Fatalf("delivered %d + missing %d != %d", len(delivered), len(be.Missing), len(indexes))
	}
	for _, i := range be.Missing {
		if delivered[i] {
			t.Fatalf("file %d both delivered and missing", i)
		}
	}
	// The caller retries what is missing; the next connection is healthy.
	if err := c.Batch(ctx, be.Missing, fn); err != nil {
		t.Fatal(err)
	}
	if len(delivered) != len(indexes) {
		t.Fatalf("delivered %d of %d", len(delivered), len(indexes))
	}
}
