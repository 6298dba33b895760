package copier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/cargo-migrate/cargo/internal/replica"
)

// whole is the chunk number of a fetch of a whole small file.
const whole = -1

func flightKey(index, chunk int) string {
	return strconv.Itoa(index) + "/" + strconv.Itoa(chunk)
}

// once runs fetch on the copier's context unless the same fetch is in
// flight, and waits for it until ctx ends. The fetch runs in a goroutine
// the copier owns, so a reader that gives up leaves it running for its
// retry to find, and Close waits for it.
func (c *Copier) once(ctx context.Context, key string, fetch func(ctx context.Context) error) error {
	res := make(chan error, 1)
	if !c.life.goOwned(func() {
		_, err, _ := c.flights.Do(key, func() (any, error) { return nil, fetch(c.life.ctx) })
		res <- err
	}) {
		return ErrClosed
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// request makes one request to the source in a slot of class cl.
func (c *Copier) request(ctx context.Context, cl class, do func() error) error {
	release, err := c.limit.acquire(ctx, cl)
	if err != nil {
		return err
	}
	defer release()
	return do()
}

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
	return c.request(ctx, forBackground, func() error {
		return c.src.Batch(ctx, todo, func(index int, size int64, r io.Reader) error {
			if err := c.checkSize(index, size); err != nil {
				return err
			}
			// The stream must be consumed here, so this write cannot be
			// handed to once; WriteWhole skips a file a read completed
			// meanwhile.
			return c.room.note(c.rep.WriteWhole(index, replica.Background, r))
		})
	})
}

// checkSize refuses a file the source sends at another size than its
// manifest said: the replica would hold a file Verify then rejects.
func (c *Copier) checkSize(index int, size int64) error {
	if e := c.rep.Entry(index); size != e.Size {
		return fmt.Errorf("the source sent %d bytes for %q, its manifest said %d", size, e.Path, e.Size)
	}
	return nil
}

// fetchWhole fetches one small file for a read.
func (c *Copier) fetchWhole(ctx context.Context, i int) error {
	return c.once(ctx, flightKey(i, whole), func(ctx context.Context) error {
		if c.rep.Done(i) {
			return nil
		}
		return c.request(ctx, forRead, func() error {
			return c.demandSource().Batch(ctx, []int{i}, func(index int, size int64, r io.Reader) error {
				if err := c.checkSize(index, size); err != nil {
					return err
				}
				return c.room.note(c.rep.WriteWhole(index, replica.OnDemand, r))
			})
		})
	})
}

// fetchChunk fetches chunk ch of large file i from src, in a slot of class
// cl.
func (c *Copier) fetchChunk(ctx context.Context, cl class, src Source, i, ch int) error {
	return c.once(ctx, flightKey(i, ch), func(ctx context.Context) error {
		if c.rep.Done(i) {
			return nil
		}
		p, err := c.rep.Partial(i)
		if errors.Is(err, replica.ErrFinished) {
			return nil
		}
		if err != nil {
			return c.room.note(err)
		}
		if p.Has(ch) {
			return nil
		}
		off, n := p.Range(ch)
		var got int64
		err = c.request(ctx, cl, func() (err error) {
			got, err = src.ReadRange(ctx, i, off, n, io.NewOffsetWriter(p.WriterAt(), off))
			return err
		})
		if err != nil {
			return c.room.note(err)
		}
		if got != n {
			return fmt.Errorf("the source sent %d bytes of chunk %d of %q, want %d", got, ch, c.rep.Entry(i).Path, n)
		}
		return c.room.note(p.MarkChunk(ch))
	})
}
