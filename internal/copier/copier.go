// Package copier fills a federated volume's replica from the source host:
// in the background, file after file with bounded concurrency, and on
// demand when the container reads a file that is not local yet. On-demand
// fetches go first; the background copy waits while any is in flight. Reads
// share one fetch of a file or chunk with each other and with the
// background's chunks; a small file a read fetches while a background batch
// streams it may cross the wire twice, and lands once.
package copier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cargo-migrate/cargo/internal/replica"
)

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
	// gone, the credential refused).
	Permanent func(error) bool
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
	if o.Permanent == nil {
		o.Permanent = func(error) bool { return false }
	}
}

func (c *Copier) demandSource() Source {
	if c.opts.Demand != nil {
		return c.opts.Demand
	}
	return c.src
}

// State is where the copy stands.
type State string

// States of a copy, as shown in the volume's Status.
const (
	StateCopying  State = "copying"
	StateStalled  State = "stalled"
	StateComplete State = "complete"
	StateFailed   State = "failed"
)

// Status is a snapshot of the copy's progress.
type Status struct {
	State       State
	FilesTotal  int
	FilesCopied int
	BytesTotal  int64
	BytesCopied int64
	// Rate is bytes per second over the last few seconds.
	Rate float64
	// Updated is when the copy last made progress.
	Updated time.Time
	Error   string
}

// Copier fills one replica.
type Copier struct {
	// ctx outlives any one reader: fetches run on it, so an interrupted
	// read leaves its fetch running for the retry to find.
	ctx    context.Context
	cancel context.CancelFunc

	rep  *replica.Replica
	src  Source
	opts Options
	log  *slog.Logger

	flightMu sync.Mutex
	flights  map[flightKey]*flight

	// demand counts on-demand fetches in flight; the background waits for
	// it to reach zero before each fetch.
	demandMu sync.Mutex
	demandCV *sync.Cond
	demand   int

	statusMu  sync.Mutex
	state     State
	lastErr   error
	rate      float64
	sampleAt  time.Time
	sampleB   int64
	lastBytes int64
	updated   time.Time // last progress
	done      chan struct{}
	finished  atomic.Bool
}

// New prepares a copier; Run does the background work.
func New(rep *replica.Replica, src Source, opts Options, log *slog.Logger) *Copier {
	opts.defaults()
	c := &Copier{rep: rep, src: src, opts: opts, log: log, flights: map[flightKey]*flight{},
		state: StateCopying, done: make(chan struct{}), updated: time.Now()}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.demandCV = sync.NewCond(&c.demandMu)
	if rep.Complete() {
		c.state = StateComplete
	}
	return c
}

// Close stops every fetch in flight.
func (c *Copier) Close() { c.cancel() }

// Done is closed when the copy is complete and the source was told.
func (c *Copier) Done() <-chan struct{} { return c.done }

// Status reports progress.
func (c *Copier) Status() Status {
	files, bytes := c.rep.Totals()
	fc, bc := c.rep.Progress()
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	now := time.Now()
	if c.sampleAt.IsZero() {
		c.sampleAt, c.sampleB = now, bc
	} else if dt := now.Sub(c.sampleAt).Seconds(); dt >= 1 {
		inst := float64(bc-c.sampleB) / dt
		c.rate = 0.5*c.rate + 0.5*inst // smooths bursts of batches
		c.sampleAt, c.sampleB = now, bc
	}
	if bc != c.lastBytes {
		c.lastBytes, c.updated = bc, now
	}
	s := Status{State: c.state, FilesTotal: files, FilesCopied: fc, BytesTotal: bytes, BytesCopied: bc, Rate: c.rate, Updated: c.updated}
	if c.lastErr != nil && c.state != StateComplete {
		s.Error = c.lastErr.Error()
	}
	if s.State == StateComplete {
		s.Rate = 0
	}
	return s
}

func (c *Copier) setState(s State, err error) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.state == StateComplete || c.state == StateFailed {
		return
	}
	c.state, c.lastErr = s, err
}

// Run copies everything not yet local, then finishes the replica and tells
// the source. It returns when the copy is complete, when ctx ends, or when
// the source refuses for good.
func (c *Copier) Run(ctx context.Context) error {
	if c.finished.Load() {
		return nil
	}
	if err := c.retry(ctx, "creating directories and links", func() error { return c.rep.Skeleton() }); err != nil {
		return err
	}
	work := make(chan func(context.Context) error)
	var wg sync.WaitGroup
	errc := make(chan error, c.opts.Workers)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range c.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range work {
				if err := job(wctx); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
	err := c.plan(wctx, work)
	close(work)
	wg.Wait()
	select {
	case werr := <-errc:
		return werr
	default:
	}
	if err != nil {
		return err
	}
	return c.finish(ctx)
}

// plan hands out batches of small files and chunks of large ones, in
// manifest order, skipping what on-demand reads already fetched.
func (c *Copier) plan(ctx context.Context, work chan<- func(context.Context) error) error {
	send := func(job func(context.Context) error) error {
		select {
		case work <- job:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var batch []int
	var batchBytes int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		b := batch
		batch, batchBytes = nil, 0
		return send(func(ctx context.Context) error {
			return c.background(ctx, "copying files", func() error { return c.fetchBatch(ctx, b) })
		})
	}
	for i := 0; i < c.rep.Len(); i++ {
		e := c.rep.Entry(i)
		if !replica.HasContent(e) || c.rep.Done(i) {
			continue
		}
		if e.Size < replica.LargeFile {
			batch = append(batch, i)
			batchBytes += e.Size
			if len(batch) >= c.opts.BatchFiles || batchBytes >= c.opts.BatchBytes {
				if err := flush(); err != nil {
					return err
				}
			}
			continue
		}
		p, err := c.rep.Partial(i)
		if errors.Is(err, replica.ErrFinished) {
			continue
		}
		if err != nil {
			return err
		}
		for _, ch := range p.Missing() {
			idx, ch := i, ch
			if err := send(func(ctx context.Context) error {
				return c.background(ctx, "copying "+e.Path, func() error { return c.fetchChunk(ctx, c.src, idx, ch) })
			}); err != nil {
				return err
			}
		}
	}
	return flush()
}

// background runs one background fetch after on-demand fetches are done,
// retrying until it succeeds.
func (c *Copier) background(ctx context.Context, what string, fetch func() error) error {
	c.demandMu.Lock()
	for c.demand > 0 {
		c.demandCV.Wait()
	}
	c.demandMu.Unlock()
	return c.retry(ctx, what, fetch)
}

// retry runs op until it succeeds, with backoff, showing the copy as
// stalled while it fails. A permanent error fails the copy.
func (c *Copier) retry(ctx context.Context, what string, op func() error) error {
	backoff := 200 * time.Millisecond
	for {
		err := op()
		if err == nil {
			c.setState(StateCopying, nil)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.opts.Permanent(err) {
			if c.rep.Complete() {
				return err // finish decides; nothing is missing
			}
			c.setState(StateFailed, fmt.Errorf("%s: %w", what, err))
			return err
		}
		c.setState(StateStalled, fmt.Errorf("%s: %w", what, err))
		c.log.Warn("copy stalled; retrying", "what", what, "error", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c *Copier) finish(ctx context.Context) error {
	if err := c.retry(ctx, "finishing the replica", c.rep.Finish); err != nil {
		return err
	}
	files, bytes := c.rep.Totals()
	report := fmt.Sprintf("%d files, %d bytes", files, bytes)
	err := c.retry(ctx, "telling the source the copy is complete", func() error {
		return c.src.Complete(ctx, report)
	})
	switch {
	case err != nil && ctx.Err() == nil && c.opts.Permanent(err):
		// The export is gone: the source released it (an earlier report
		// got through) or it was aborted. Either way every byte is here.
		c.log.Info("the source no longer serves the export; the copy is complete", "error", err)
	case err != nil:
		return err
	}
	c.statusMu.Lock()
	c.state, c.lastErr = StateComplete, nil
	c.statusMu.Unlock()
	if c.finished.CompareAndSwap(false, true) {
		close(c.done)
	}
	c.log.Info("copy complete", "files", files, "bytes", bytes)
	return nil
}

// flight is one fetch that several readers may wait on.
type flight struct {
	done chan struct{}
	err  error
}

type flightKey struct{ index, chunk int }

// once starts fetch on the copier's context unless the same fetch is in
// flight, and waits for it until ctx ends. fetch gets the context to use.
func (c *Copier) once(ctx context.Context, key flightKey, fetch func(ctx context.Context) error) error {
	c.flightMu.Lock()
	f, ok := c.flights[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		c.flights[key] = f
		go func() {
			f.err = fetch(c.ctx)
			c.flightMu.Lock()
			delete(c.flights, key)
			c.flightMu.Unlock()
			close(f.done)
		}()
	}
	c.flightMu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

const whole = -1

func (c *Copier) fetchBatch(ctx context.Context, indexes []int) error {
	var todo []int
	for _, i := range indexes {
		if !c.rep.Done(i) {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	return c.src.Batch(ctx, todo, func(index int, size int64, r io.Reader) error {
		if size != c.rep.Entry(index).Size {
			return fmt.Errorf("the source sent %d bytes for %q, its manifest said %d", size, c.rep.Entry(index).Path, c.rep.Entry(index).Size)
		}
		// The stream must be consumed here, so this write cannot be handed
		// to once; WriteWhole skips a file a read completed meanwhile.
		return c.rep.WriteWhole(index, replica.Background, r)
	})
}

// fetchWhole fetches one small file for a read.
func (c *Copier) fetchWhole(ctx context.Context, i int) error {
	return c.once(ctx, flightKey{i, whole}, func(ctx context.Context) error {
		if c.rep.Done(i) {
			return nil
		}
		return c.demandSource().Batch(ctx, []int{i}, func(index int, size int64, r io.Reader) error {
			return c.rep.WriteWhole(index, replica.OnDemand, r)
		})
	})
}

func (c *Copier) fetchChunk(ctx context.Context, src Source, i, ch int) error {
	return c.once(ctx, flightKey{i, ch}, func(ctx context.Context) error {
		if c.rep.Done(i) {
			return nil
		}
		p, err := c.rep.Partial(i)
		if errors.Is(err, replica.ErrFinished) {
			return nil
		}
		if err != nil {
			return err
		}
		if p.Has(ch) {
			return nil
		}
		off, n := p.Range(ch)
		got, err := src.ReadRange(ctx, i, off, n, io.NewOffsetWriter(p.WriterAt(), off))
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("the source sent %d bytes of chunk %d of %q, want %d", got, ch, c.rep.Entry(i).Path, n)
		}
		return p.MarkChunk(ch)
	})
}

// onDemand marks an on-demand fetch in flight for its duration, so the
// background copy makes way.
func (c *Copier) onDemand(fetch func() error) error {
	c.demandMu.Lock()
	c.demand++
	c.demandMu.Unlock()
	defer func() {
		c.demandMu.Lock()
		c.demand--
		if c.demand == 0 {
			c.demandCV.Broadcast()
		}
		c.demandMu.Unlock()
	}()
	return fetch()
}

// OpenLocal opens entry i's content if it is local (for the FUSE view).
func (c *Copier) OpenLocal(i int) (*os.File, bool, error) { return c.rep.OpenLocal(i) }

// ReadAt serves a read of entry i that may not be local yet: a small file
// is fetched whole, a large one chunk by chunk, the chunks the read needs
// first.
func (c *Copier) ReadAt(ctx context.Context, i int, p []byte, off int64) (int, error) {
	i = c.rep.ContentIndex(i)
	e := c.rep.Entry(i)
	if off >= e.Size || len(p) == 0 {
		return 0, io.EOF
	}
	if !c.rep.Done(i) {
		if e.Size < replica.LargeFile {
			if err := c.onDemand(func() error { return c.fetchWhole(ctx, i) }); err != nil {
				return 0, err
			}
		} else {
			n, err := c.readPartial(ctx, i, p, off)
			if !errors.Is(err, replica.ErrFinished) {
				return n, err
			}
		}
	}
	f, ok, err := c.rep.OpenLocal(i)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%q is not local after fetching it", e.Path)
	}
	defer f.Close()
	return f.ReadAt(p, off)
}

func (c *Copier) readPartial(ctx context.Context, i int, p []byte, off int64) (int, error) {
	part, err := c.rep.Partial(i)
	if err != nil {
		return 0, err
	}
	size := c.rep.Entry(i).Size
	end := min(off+int64(len(p)), size)
	var missing []int
	for ch := int(off / replica.ChunkSize); int64(ch)*replica.ChunkSize < end; ch++ {
		if !part.Has(ch) {
			missing = append(missing, ch)
		}
	}
	if len(missing) > 0 {
		// The first byte should not wait for whole chunks: fetch just the
		// bytes asked for and hand them over, while the chunks they belong
		// to are fetched (once, ahead of the background copy) for the
		// reads that follow.
		for _, ch := range missing {
			go c.onDemand(func() error { return c.fetchChunk(c.ctx, c.demandSource(), i, ch) })
		}
		var buf bytes.Buffer
		buf.Grow(int(end - off))
		if _, err := c.demandSource().ReadRange(ctx, i, off, end-off, &buf); err != nil && err != io.EOF {
			return 0, err
		}
		n := copy(p, buf.Bytes())
		if off+int64(n) == size {
			return n, io.EOF
		}
		return n, nil
	}
	n, err := part.ReadAt(p[:end-off], off)
	if err == nil && end == size {
		err = io.EOF
	}
	return n, err
}
