// Package copier fills a federated volume's replica from the source host:
// in the background, file after file with bounded concurrency, and on
// demand when the container reads a file that is not local yet. On-demand
// fetches go first; the background copy waits while any is in flight. Reads
// share one fetch of a file or chunk with each other and with the
// background's chunks; a small file a read fetches while a background batch
// streams it may cross the wire twice, and lands once.
//
// The copier keeps its requests to the source below what the source serves
// at once, reads first, so a read waits its turn rather than being turned
// away; it fails only when the source is gone for good. A full disk stalls
// the background copy until space is freed, and reads meanwhile take their
// bytes from the source.
//
// The copier owns every goroutine it starts: Close stops them and returns
// once they, and the calls in progress, have ended.
package copier

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/cargo-migrate/cargo/internal/replica"
)

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("the copy was stopped")

// Source is the source host's export, as the copier uses it.
type Source interface {
	// Batch streams the whole content of several files, calling fn for
	// each file that arrives, in order.
	Batch(ctx context.Context, indexes []int, fn func(index int, size int64, r io.Reader) error) error
	// ReadRange writes bytes [off, off+n) of a file to w.
	ReadRange(ctx context.Context, index int, off, n int64, w io.Writer) (int64, error)
	// Complete tells the source the copy is done, releasing its export.
	Complete(ctx context.Context, report string) error
}

// Options tune the copy.
type Options struct {
	// Demand serves on-demand reads; nil means the background Source. A
	// separate connection keeps a read from queueing behind bulk transfers.
	Demand Source
	// Workers is how many background fetches run at once.
	Workers int
	// BatchFiles and BatchBytes bound one batch of small files.
	BatchFiles int
	BatchBytes int64
	// Permanent reports errors that retrying cannot mend (the export is
	// gone, the credential refused). Reads fail only on these, or when
	// their context ends.
	Permanent func(error) bool
	// MaxRequests bounds the requests to the source in flight at once,
	// background and reads together, default 12: below the 16 the source
	// serves per export, beyond which it turns requests away.
	MaxRequests int
	// Dir is the replica's directory. When its disk fills, the copy says
	// how much more space it needs, and resumes when it was freed, as a
	// statfs of Dir shows; without Dir it retries now and then.
	Dir string
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.BatchFiles <= 0 {
		o.BatchFiles = 1024
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 8 << 20
	}
	if o.MaxRequests <= 0 {
		o.MaxRequests = 12
	}
	if o.Permanent == nil {
		o.Permanent = func(error) bool { return false }
	}
}

// Copier fills one replica.
type Copier struct {
	rep  *replica.Replica
	src  Source
	opts Options
	log  *slog.Logger

	// life's context outlives any one reader: fetches run on it, so an
	// interrupted read leaves its fetch running for the retry to find.
	life *lifetime
	// flights shares one fetch of a file or chunk among its readers.
	flights singleflight.Group
	// demand holds the background copy back while reads fetch.
	demand demand
	// limit queues requests to the source, reads first.
	limit *limiter
	// room sends reads to the source while the disk is full.
	room room

	status   status
	done     chan struct{}
	finished atomic.Bool
}

// New prepares a copier; Run does the background work.
func New(rep *replica.Replica, src Source, opts Options, log *slog.Logger) *Copier {
	opts.defaults()
	c := &Copier{rep: rep, src: src, opts: opts, log: log, life: newLifetime(), limit: newLimiter(opts.MaxRequests), done: make(chan struct{})}
	c.status.state, c.status.updated = StateCopying, time.Now()
	if rep.Complete() {
		c.status.state = StateComplete
	}
	return c
}

// Close stops the copy and every fetch in flight, and returns when they
// and the calls in progress have ended, so the replica can be closed.
// Later calls fail with ErrClosed; Status and Done still answer. Close may
// be called more than once.
func (c *Copier) Close() { c.life.close() }

// Done is closed when the copy is complete and the source was told.
func (c *Copier) Done() <-chan struct{} { return c.done }

func (c *Copier) demandSource() Source {
	if c.opts.Demand != nil {
		return c.opts.Demand
	}
	return c.src
}
