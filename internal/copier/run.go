package copier

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/replica"
)

// Run copies everything not yet local, then finishes the replica and tells
// the source. It returns when the copy is complete, when ctx ends or the
// copier is closed, or when the source refuses for good.
func (c *Copier) Run(ctx context.Context) error {
	if c.finished.Load() {
		return nil
	}
	ctx, end, err := c.life.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	for round := 1; ; round++ {
		if err := c.copyMissing(ctx); err != nil {
			return err
		}
		var incomplete error
		err := c.retry(ctx, "checking the copy", func() error {
			err := c.verify()
			if errors.Is(err, replica.ErrIncomplete) {
				incomplete, err = err, nil
			}
			return err
		})
		if err != nil {
			return err
		}
		if incomplete == nil {
			break
		}
		if round == verifyRounds {
			err := fmt.Errorf("checking the copy after %d rounds: %w", round, incomplete)
			c.status.set(StateFailed, err)
			return err
		}
		// Verify counted what it found missing as missing again: the
		// next round fetches it anew.
		c.log.Warn("the copy is not complete on disk; copying again what is missing", "error", incomplete, "round", round)
	}
	return c.finish(ctx)
}

// verifyRounds is how many times Run copies what Verify found missing
// before it gives up: a file that keeps vanishing is not the copier's to
// fix.
const verifyRounds = 3

// copyMissing makes the skeleton and copies every file not yet done.
func (c *Copier) copyMissing(ctx context.Context) error {
	if err := c.retry(ctx, "creating directories and links", c.rep.Skeleton); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Workers)
	err := c.plan(gctx, g)
	if werr := g.Wait(); werr != nil {
		return werr
	}
	return err
}

// verify finishes the replica (directory times) and proves it complete
// from disk.
func (c *Copier) verify() error {
	if err := failpoint.Inject("copier.before-verify"); err != nil {
		return err
	}
	if err := c.rep.Finish(); err != nil {
		return err
	}
	return c.rep.Verify()
}

// plan hands out batches of small files and chunks of large ones to g's
// workers, in manifest order, skipping what on-demand reads already
// fetched.
func (c *Copier) plan(ctx context.Context, g *errgroup.Group) error {
	send := func(job func() error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		g.Go(job) // waits for a free worker
		return nil
	}
	var batch []int
	var batchBytes int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		b := batch
		batch, batchBytes = nil, 0
		return send(func() error {
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
		var p *replica.Partial
		err := c.retry(ctx, "opening "+e.Path, func() (err error) {
			p, err = c.rep.Partial(i)
			if errors.Is(err, replica.ErrFinished) {
				p, err = nil, nil
			}
			return err
		})
		if err != nil {
			return err
		}
		if p == nil {
			continue
		}
		for _, ch := range p.Missing() {
			if err := send(func() error {
				return c.background(ctx, "copying "+e.Path, func() error { return c.fetchChunk(ctx, forBackground, c.src, i, ch) })
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
	if err := c.demand.wait(ctx); err != nil {
		return err
	}
	return c.retry(ctx, what, fetch)
}

// retry runs op until it succeeds, with backoff, showing the copy as
// stalled while it fails. A full disk waits for space. A permanent error
// fails the copy.
func (c *Copier) retry(ctx context.Context, what string, op func() error) error {
	backoff := 200 * time.Millisecond
	roomWait := roomRetry
	for {
		err := op()
		if err == nil {
			c.status.set(StateCopying, nil)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if diskFull(err) {
			if err := c.waitForRoom(ctx, fmt.Errorf("%s: %w", what, err), roomWait); err != nil {
				return err
			}
			roomWait = min(roomWait*2, roomRetryMax)
			continue
		}
		if c.opts.Permanent(err) {
			if c.rep.Complete() {
				return err // finish decides; nothing is missing
			}
			c.status.set(StateFailed, fmt.Errorf("%s: %w", what, err))
			return err
		}
		c.status.set(StateStalled, fmt.Errorf("%s: %w", what, err))
		c.log.Warn("copy stalled; retrying", "what", what, "error", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// finish tells the source the copy is complete. Run calls it only once
// Verify has proved it.
func (c *Copier) finish(ctx context.Context) error {
	files, bytes := c.rep.Totals()
	report := fmt.Sprintf("%d files, %d bytes", files, bytes)
	err := c.retry(ctx, "telling the source the copy is complete", func() error {
		return c.request(ctx, forBackground, func() error { return c.src.Complete(ctx, report) })
	})
	switch {
	case err != nil && ctx.Err() == nil && c.opts.Permanent(err):
		// The export is gone: the source released it (an earlier report
		// got through) or it was aborted. Either way every byte is here.
		c.log.Info("the source no longer serves the export; the copy is complete", "error", err)
	case err != nil:
		return err
	}
	c.status.complete()
	if c.finished.CompareAndSwap(false, true) {
		close(c.done)
	}
	c.log.Info("copy complete", "files", files, "bytes", bytes)
	return nil
}
