package peer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// dialFrom dials addr from a loopback address of its own, as another host
// would.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// clientFrom is a test client whose connections come from local.
func clientFrom(t *testing.T, local string, tk Ticket, opts ClientOptions) *Client {
	t.Helper()
	c := newTestClient(t, tk, opts)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c.hc.Transport.(*http.Transport).DialContext = d.DialContext
	return c
}

// closedByPeer reports whether the server closed c within d.
func closedByPeer(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout()
	return err != nil && !timedOut
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readFile0(ctx context.Context, c *Client) (string, error) {
	var buf bytes.Buffer
	_, err := c.ReadRange(ctx, 0, 0, -1, &buf)
	return buf.String(), err
}

// TestConnectionFlood: connections that never handshake take no more than
// the bounds, are closed when the handshake deadline passes, and leave
// room for real clients: at once from another address while one address
// floods, and once the flood's connections time out when many do.
func TestConnectionFlood(t *testing.T) {
	exp, token := newMemExport(t, [][]byte{[]byte("hello")})
	opts := ServerOptions{MaxConns: 8, MaxConnsPerAddr: 4, HandshakeTimeout: 500 * time.Millisecond, AuthTimeout: time.Second}
	ts := startServer(t, memExports{"e1": exp}, opts, nil)
	gate := ts.srv.gate
	ctx := context.Background()

	// Someone records the most connections open at any time.
	var peak struct {
		sync.Mutex
		n int
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			n := gate.count()
			peak.Lock()
			peak.n = max(peak.n, n)
			peak.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	// One address opens 20 connections and sends nothing: 16 are closed
	// at once.
	var flood []net.Conn
	for range 20 {
		flood = append(flood, dialFrom(t, "127.0.0.2", ts.addr))
	}
	waitFor(t, 2*time.Second, "the server refuses the flood over MaxConnsPerAddr", func() bool { return gate.count() == 4 })
	refused := 0
	for _, c := range flood {
		if closedByPeer(c, 50*time.Millisecond) {
			refused++
		}
	}
	if refused < 16 {
		t.Errorf("%d of 20 flooding connections were closed at once, want 16", refused)
	}

	// A client from another address gets through while the flood holds
	// its four.
	c := clientFrom(t, "127.0.0.3", ts.ticket("e1", token), ClientOptions{RetryMax: -1})
	if got, err := readFile0(ctx, c); err != nil || got != "hello" {
		t.Fatalf("a client from another address during the flood: %q, %v", got, err)
	}
	c.Close()

	// The handshake deadline closes the flood's connections.
	start := time.Now()
	for _, c := range flood {
		if !closedByPeer(c, 3*time.Second) {
			t.Fatal("a connection that never handshook is still open after 3s")
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the flood's connections were closed after %v, want about the 500ms handshake deadline", took)
	}
	waitFor(t, 2*time.Second, "every connection is closed", func() bool { return gate.count() == 0 })

	// Two addresses fill MaxConns: a client from a third is refused at
	// first, and gets through, retrying, once their handshakes time out.
	for _, from := range []string{"127.0.0.4", "127.0.0.5"} {
		for range 4 {
			dialFrom(t, from, ts.addr)
		}
	}
	waitFor(t, 2*time.Second, "the flood fills MaxConns", func() bool { return gate.count() == 8 })
	c = clientFrom(t, "127.0.0.6", ts.ticket("e1", token),
		ClientOptions{RetryMax: 20, RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: 200 * time.Millisecond})
	start = time.Now()
	if got, err := readFile0(ctx, c); err != nil || got != "hello" {
		t.Fatalf("a client after the flood timed out: %q, %v", got, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("got through after %v, while the flood held every connection", took)
	}
	c.Close()

	peak.Lock()
	if peak.n > opts.MaxConns {
		t.Errorf("%d connections were open at once, over MaxConns %d", peak.n, opts.MaxConns)
	}
	peak.Unlock()

	// The server is still up.
	c = newTestClient(t, ts.ticket("e1", token), ClientOptions{RetryMax: 20})
	if got, err := readFile0(ctx, c); err != nil || got != "hello" {
		t.Fatalf("after the flood: %q, %v", got, err)
	}
}

// TestUnauthenticatedConnsClosed: a connection that completes its handshake
// but carries no authenticated request is closed after AuthTimeout, one
// whose request fails authentication at once; an authenticated one stays.
func TestUnauthenticatedConnsClosed(t *testing.T) {
	exp, token := newMemExport(t, [][]byte{[]byte("hello")})
	opts := ServerOptions{HandshakeTimeout: 5 * time.Second, AuthTimeout: 500 * time.Millisecond}
	ts := startServer(t, memExports{"e1": exp}, opts, nil)
	conf, err := PinnedTLSConfig(ts.id.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("silent after the handshake", func(t *testing.T) {
		c, err := tls.Dial("tcp", ts.addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if !closedByPeer(c, 5*time.Second) {
			t.Fatal("still open after 5s")
		}
		if took := time.Since(start); took < 400*time.Millisecond || took > 3*time.Second {
			t.Errorf("closed after %v, want about the 500ms AuthTimeout", took)
		}
	})

	t.Run("requests without a credential", func(t *testing.T) {
		c, err := tls.Dial("tcp", ts.addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Unrouted requests keep no connection open past AuthTimeout.
		br := bufio.NewReader(c)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return
			}
			drainClose(resp.Body)
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("a connection without authenticated requests stayed open for 5s")
	})

	// HTTP/1.1: the 401 ends the connection, long before AuthTimeout.
	ts2 := startServer(t, memExports{"e1": exp}, ServerOptions{AuthTimeout: time.Minute}, nil)
	t.Run("failed auth, HTTP/1.1", func(t *testing.T) {
		conf, err := PinnedTLSConfig(ts2.id.Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		conf.NextProtos = []string{"http/1.1"}
		c, err := tls.Dial("tcp", ts2.addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /v1/exports/e1/manifest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the connection is still open after a 401: %v", err)
		}
	})

	// Both protocols: after a 401 the next request needs a new connection;
	// after an authenticated one, the connection outlives AuthTimeout.
	for _, proto := range []string{"h2", "http/1.1"} {
		t.Run("connection reuse, "+proto, func(t *testing.T) {
			conf := conf.Clone()
			conf.NextProtos = []string{proto}
			tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: proto == "h2"}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			get := func(token string) (status int, reused bool) {
				t.Helper()
				ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
					GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
				})
				req, _ := http.NewRequestWithContext(ctx, "GET", ts.url("/v1/exports/e1/files/0"), nil)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				if proto == "h2" && resp.ProtoMajor != 2 || proto != "h2" && resp.ProtoMajor != 1 {
					t.Fatalf("protocol %s", resp.Proto)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode, reused
			}
			if status, _ := get(token); status != http.StatusOK {
				t.Fatalf("status %d", status)
			}
			time.Sleep(2 * opts.AuthTimeout)
			if status, reused := get(token); status != http.StatusOK || !reused {
				t.Errorf("after AuthTimeout: status %d, connection reused %v; want the authenticated connection kept", status, reused)
			}
			if status, _ := get("wrong"); status != http.StatusUnauthorized {
				t.Fatalf("status %d", status)
			}
			time.Sleep(100 * time.Millisecond) // for the GOAWAY to arrive
			if status, reused := get(token); status != http.StatusOK || reused {
				t.Errorf("after a 401: status %d, connection reused %v; want a new connection", status, reused)
			}
		})
	}
}

func TestConnLimitsFromRlimit(t *testing.T) {
	for _, tc := range []struct {
		opts            ServerOptions
		nofile          uint64
		conns, perAddrs int
	}{
		{ServerOptions{}, 0, DefaultMaxConns, DefaultMaxConnsPerAddr},
		{ServerOptions{}, 1 << 20, DefaultMaxConns, DefaultMaxConnsPerAddr},
		{ServerOptions{}, 1024, 512, DefaultMaxConnsPerAddr},
		{ServerOptions{}, 100, 50, 50},
		{ServerOptions{}, 1, 1, 1},
		{ServerOptions{MaxConns: 5000, MaxConnsPerAddr: 10}, 4096, 2048, 10},
		{ServerOptions{MaxConns: 10, MaxConnsPerAddr: 20}, 0, 10, 10},
	} {
		o := tc.opts.withDefaults(tc.nofile)
		if o.MaxConns != tc.conns || o.MaxConnsPerAddr != tc.perAddrs {
			t.Errorf("%+v with RLIMIT_NOFILE %d: MaxConns %d, MaxConnsPerAddr %d; want %d, %d",
				tc.opts, tc.nofile, o.MaxConns, o.MaxConnsPerAddr, tc.conns, tc.perAddrs)
		}
	}
	nofile := openFileLimit()
	if nofile == 0 {
		t.Fatal("RLIMIT_NOFILE unknown")
	}
	id, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(memExports{}, id, ServerOptions{MaxConns: 1 << 30}, nil)
	if uint64(s.opts.MaxConns) > nofile/2 {
		t.Errorf("MaxConns %d with RLIMIT_NOFILE %d", s.opts.MaxConns, nofile)
	}
}

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:7450":               "192.0.2.1",
		"[::ffff:192.0.2.1]:7450":      "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:7450":  "2001:db8:1:2::/64",
		"[2001:db8:1:2:ff::1]:1":       "2001:db8:1:2::/64",
		"[2001:db8:1:3::1]:1":          "2001:db8:1:3::/64",
		"[fe80::1%eth0]:7450":          "fe80::/64",
		"not an address":               "not an address",
		strings.Repeat("x", 10) + ":1": strings.Repeat("x", 10) + ":1",
	} {
		if got := addrKey(fakeAddr(in)); got != want {
			t.Errorf("addrKey(%s) = %s, want %s", in, got, want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
