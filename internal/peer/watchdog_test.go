package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallListener makes the first accepted connection go silent after
// limit bytes without closing, like a peer behind a cut link: no reset
// ever arrives.
type stallListener struct {
	net.Listener
	limit  int64
	once   atomic.Bool
	stalls atomic.Int64
}

func (l *stallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || !l.once.CompareAndSwap(false, true) {
		return c, err
	}
	return &stallConn{Conn: c, left: l.limit, l: l, gone: make(chan struct{})}, nil
}

type stallConn struct {
	net.Conn
	mu   sync.Mutex
	left int64
	l    *stallListener
	gone chan struct{}
	once sync.Once
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if int64(len(p)) > c.left {
		n, _ := c.Conn.Write(p[:c.left])
		c.left = 0
		c.mu.Unlock()
		c.l.stalls.Add(1)
		<-c.gone // silent until closed
		return n, net.ErrClosed
	}
	c.left -= int64(len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.gone) })
	return c.Conn.Close()
}

// A body that stops delivering is taken as broken and resumed, over
// HTTP/1.1 (no pings) and HTTP/2, instead of blocking for ever.
func TestSilentPeerIsResumed(t *testing.T) {
	for _, http1 := range []bool{true, false} {
		name := "http2"
		if http1 {
			name = "http1"
		}
		t.Run(name, func(t *testing.T) {
			content := make([]byte, 8<<20)
			rand.Read(content)
			exp, token := newMemExport(t, [][]byte{content})
			sl := &stallListener{limit: 1 << 20}
			ts := startServer(t, memExports{"e1": exp}, ServerOptions{}, nil, func(l net.Listener) net.Listener {
				sl.Listener = l
				return sl
			})
			c := newTestClient(t, ts.ticket("e1", token), ClientOptions{ForceHTTP1: http1, BodyIdleTimeout: 300 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var buf bytes.Buffer
			n, err := c.ReadRange(ctx, 0, 0, -1, &buf)
			if err != nil || n != int64(len(content)) || !bytes.Equal(buf.Bytes(), content) {
				t.Fatalf("ReadRange: %d bytes, %v", n, err)
			}
			if sl.stalls.Load() == 0 {
				t.Fatal("the connection never went silent: the test tested nothing")
			}
		})
	}
}
