package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The peer port is open to the network, and the plugin's process also
// serves the volume API and every FUSE mount of the host: a flood of
// connections must not take the descriptors those need. So the server
// admits a bounded number of connections, in all and per remote address,
// closes those over the bounds at once, does each TLS handshake under a
// deadline, and closes a connection that has not carried an authenticated
// request soon after it was accepted.

// openFileLimit is the process's RLIMIT_NOFILE soft limit (Go raises it to
// the hard limit at start), or 0 if it is unknown or unlimited.
func openFileLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return rl.Cur
}

// connGate counts open connections, in all and by remote address.
type connGate struct {
	max, perAddr int

	mu     sync.Mutex
	open   int
	byAddr map[string]int
}

func newConnGate(total, perAddr int) *connGate {
	return &connGate{max: total, perAddr: perAddr, byAddr: make(map[string]int)}
}

// take admits one more connection from key, or says which bound it is over.
func (g *connGate) take(key string) (ok bool, over string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.open >= g.max:
		return false, "MaxConns"
	case g.byAddr[key] >= g.perAddr:
		return false, "MaxConnsPerAddr"
	}
	g.open++
	g.byAddr[key]++
	return true, ""
}

// give returns what take admitted.
func (g *connGate) give(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open--
	if g.byAddr[key] <= 1 {
		delete(g.byAddr, key) // keep the map as small as the open connections
	} else {
		g.byAddr[key]--
	}
}

func (g *connGate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// addrKey is what MaxConnsPerAddr counts by: the IPv4 address, or the
// IPv6 /64, since one host commonly holds a whole /64.
func addrKey(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// trackedConn holds a slot of the gate until it is closed, and closes
// itself if it has not been authenticated within the deadline.
type trackedConn struct {
	net.Conn
	gate   *connGate
	key    string
	timer  *time.Timer
	authed atomic.Bool
	once   sync.Once
}

func newTrackedConn(c net.Conn, gate *connGate, key string, authTimeout time.Duration) *trackedConn {
	tc := &trackedConn{Conn: c, gate: gate, key: key}
	tc.timer = time.AfterFunc(time.Hour, func() {
		if !tc.authed.Load() {
			tc.Close()
		}
	})
	// Armed only now, so the function never runs before timer is set.
	tc.timer.Stop()
	tc.timer.Reset(authTimeout)
	return tc
}

// authenticated lifts the deadline: the connection carried a request with a
// valid credential.
func (c *trackedConn) authenticated() {
	if !c.authed.Swap(true) {
		c.timer.Stop()
	}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.timer.Stop()
		c.gate.give(c.key)
	})
	return err
}

type connKey struct{}

// connContext is the http.Server's ConnContext: it lets handlers reach the
// trackedConn under a request.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if t, ok := c.(*tls.Conn); ok {
		if tc, ok := t.NetConn().(*trackedConn); ok {
			return context.WithValue(ctx, connKey{}, tc)
		}
	}
	return ctx
}

// markAuthenticated tells the connection under ctx, if any, that it
// carried an authenticated request.
func markAuthenticated(ctx context.Context) {
	if tc, ok := ctx.Value(connKey{}).(*trackedConn); ok {
		tc.authenticated()
	}
}

// listener is what the http.Server accepts from: TCP connections within
// the gate's bounds whose TLS handshake completed within HandshakeTimeout.
// Handshakes run off the accept loop, so a slow one holds up no other.
type listener struct {
	raw   net.Listener
	s     *Server
	conf  *tls.Config
	ready chan net.Conn
	done  chan struct{}
	// ctx ends with done: it interrupts the handshakes under way.
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
	err       error // why done was closed
}

func (s *Server) newListener(raw net.Listener) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	// A copy: http.Server.Serve writes to its TLSConfig while setting up
	// HTTP/2, and the handshakes may already run.
	l := &listener{raw: raw, s: s, conf: s.srv.TLSConfig.Clone(), ready: make(chan net.Conn), done: make(chan struct{}),
		ctx: ctx, cancel: cancel}
	go l.acceptLoop()
	return l
}

func (l *listener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.raw.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.close(err)
				return
			}
			// Out of descriptors (EMFILE) or an aborted connection: wait
			// and go on; the service stays up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.s.log.Warn("accepting a peer connection failed; retrying", "err", err, "wait", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-l.done:
				return
			}
		}
		backoff = 0
		key := addrKey(c.RemoteAddr())
		if ok, over := l.s.gate.take(key); !ok {
			c.Close()
			l.s.refusals.note(l.s, over, key)
			continue
		}
		go l.handshake(newTrackedConn(c, l.s.gate, key, l.s.opts.AuthTimeout))
	}
}

func (l *listener) handshake(tc *trackedConn) {
	ctx, cancel := context.WithTimeout(l.ctx, l.s.opts.HandshakeTimeout)
	defer cancel()
	c := tls.Server(tc, l.conf)
	// An interrupted handshake closes tc.
	if err := c.HandshakeContext(ctx); err != nil {
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader) {
			// As net/http answers plain HTTP on a TLS port.
			_, _ = io.WriteString(rh.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		l.s.log.Debug("peer TLS handshake failed", "remote", tc.RemoteAddr().String(), "err", err)
		tc.Close()
		return
	}
	select {
	case l.ready <- c:
	case <-l.done:
		tc.Close()
	}
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *listener) close(err error) {
	l.closeOnce.Do(func() {
		l.err = err
		close(l.done)
		l.cancel()
	})
}

func (l *listener) Close() error {
	l.close(net.ErrClosed)
	return l.raw.Close()
}

func (l *listener) Addr() net.Addr { return l.raw.Addr() }

// refusals logs connections refused over a bound, at most once per
// interval, so a flood does not flood the log too.
type refusals struct {
	mu   sync.Mutex
	n    int
	last time.Time
}

const refusalLogInterval = 10 * time.Second

func (r *refusals) note(s *Server, over, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if now := time.Now(); now.Sub(r.last) >= refusalLogInterval {
		s.log.Warn("refusing peer connections over the connection limits", "refused", r.n, "limit", over,
			"max_conns", s.opts.MaxConns, "max_conns_per_addr", s.opts.MaxConnsPerAddr, "last_from", key)
		r.n, r.last = 0, now
	}
}
