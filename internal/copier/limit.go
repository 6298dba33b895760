package copier

import (
	"context"
	"slices"
	"sync"
)

// class is whom a request to the source serves; lower classes go first.
type class int

const (
	// forRead: a read is waiting for the answer.
	forRead class = iota
	// forReadAhead: chunks of what was read, for the reads that follow.
	forReadAhead
	// forBackground: the background copy.
	forBackground
	classes
)

// limiter bounds the requests in flight from this copier to the source.
// The source serves a fixed number per export and answers the rest with
// 429 instead of queueing them, so the copier queues them itself, below
// that number, and hands each free slot to a waiting read first. Chunk
// and batch transfers hold at most a third of the slots each, so a read
// never waits for one of them to end.
type limiter struct {
	mu       sync.Mutex
	max      int
	caps     [classes]int
	inflight int
	held     [classes]int
	queue    [classes][]*slot
}

type slot struct {
	granted bool
	ready   chan struct{}
}

func newLimiter(n int) *limiter {
	bulk := max(1, n/3)
	return &limiter{max: n, caps: [classes]int{n, bulk, bulk}}
}

// acquire waits for a slot for a request of class cl, or for ctx to end.
// The caller calls release once the request is over.
func (l *limiter) acquire(ctx context.Context, cl class) (release func(), _ error) {
	s := &slot{ready: make(chan struct{})}
	l.mu.Lock()
	l.queue[cl] = append(l.queue[cl], s)
	l.grant()
	l.mu.Unlock()
	release = sync.OnceFunc(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.inflight--
		l.held[cl]--
		l.grant()
	})
	select {
	case <-s.ready:
		return release, nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	granted := s.granted
	if !granted {
		l.queue[cl] = slices.DeleteFunc(l.queue[cl], func(q *slot) bool { return q == s })
	}
	l.mu.Unlock()
	if granted {
		release()
	}
	return nil, ctx.Err()
}

// grant hands free slots to the waiters, in class order: a class waits
// while one before it waits for a slot, not while it waits for its cap.
// Called with l.mu held.
func (l *limiter) grant() {
	for cl := range classes {
		for len(l.queue[cl]) > 0 && l.held[cl] < l.caps[cl] {
			if l.inflight >= l.max {
				return
			}
			s := l.queue[cl][0]
			l.queue[cl] = l.queue[cl][1:]
			s.granted = true
			close(s.ready)
			l.inflight++
			l.held[cl]++
		}
	}
}

// queued is how many requests of class cl wait, for tests.
func (l *limiter) queued(cl class) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue[cl])
}
