package copier

import (
	"context"
	"sync"
)

// lifetime owns a copier's goroutines and counts the calls in progress,
// so that close can stop them all and wait for them: once it returns,
// nothing the copier started touches the replica.
type lifetime struct {
	ctx    context.Context // ends at close
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	calls   map[uint64]context.CancelFunc // of the calls in progress
	nextID  uint64
	running sync.WaitGroup // calls and goroutines
}

func newLifetime() *lifetime {
	l := &lifetime{calls: map[uint64]context.CancelFunc{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// enter counts a call in progress until its exit; it fails after close.
func (l *lifetime) enter() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.running.Add(1)
	return nil
}

func (l *lifetime) exit() { l.running.Done() }

// begin enters a call whose context close also cancels; end exits it.
func (l *lifetime) begin(ctx context.Context) (_ context.Context, end func(), _ error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, nil, ErrClosed
	}
	l.running.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	id := l.nextID
	l.nextID++
	l.calls[id] = cancel
	return ctx, func() {
		l.mu.Lock()
		delete(l.calls, id)
		l.mu.Unlock()
		cancel()
		l.running.Done()
	}, nil
}

// goOwned runs f in a goroutine that close waits for. After close it runs
// nothing and reports false.
func (l *lifetime) goOwned(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.running.Go(f)
	return true
}

// close cancels every call and goroutine and waits for them to end. Once
// closed is set, every context they use is already cancelled.
func (l *lifetime) close() {
	l.mu.Lock()
	l.closed = true
	l.cancel()
	for _, cancel := range l.calls {
		cancel()
	}
	l.mu.Unlock()
	l.running.Wait()
}
