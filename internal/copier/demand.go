package copier

import (
	"context"
	"sync"
)

// demand counts on-demand fetches in flight, so the background copy can
// make way for them.
type demand struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n falls back to zero
}

// run marks fetch in flight for its duration.
func (d *demand) run(fetch func() error) error {
	d.mu.Lock()
	if d.n == 0 {
		d.idle = make(chan struct{})
	}
	d.n++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.n--
		if d.n == 0 {
			close(d.idle)
		}
		d.mu.Unlock()
	}()
	return fetch()
}

// wait returns when no on-demand fetch is in flight, or the error of ctx
// once it ends.
func (d *demand) wait(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d.mu.Lock()
		n, idle := d.n, d.idle
		d.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
		}
	}
}
