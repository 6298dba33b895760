package copier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cargo-migrate/cargo/internal/replica"
)

// OpenLocal opens entry i's content if it is local (for the FUSE view).
func (c *Copier) OpenLocal(i int) (*os.File, bool, error) {
	if err := c.life.enter(); err != nil {
		return nil, false, err
	}
	defer c.life.exit()
	return c.rep.OpenLocal(i)
}

// ReadAt serves a read of entry i that may not be local yet: a small file
// is fetched whole, a large one chunk by chunk, the chunks the read needs
// first.
func (c *Copier) ReadAt(ctx context.Context, i int, p []byte, off int64) (int, error) {
	ctx, end, err := c.life.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer end()
	i = c.rep.ContentIndex(i)
	e := c.rep.Entry(i)
	if off >= e.Size || len(p) == 0 {
		return 0, io.EOF
	}
	if !c.rep.Done(i) {
		if e.Size < replica.LargeFile {
			if err := c.demand.run(func() error { return c.fetchWhole(ctx, i) }); err != nil {
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
		// reads that follow. A chunk that fails is left to them and to the
		// background copy.
		for _, ch := range missing {
			c.life.goOwned(func() {
				_ = c.demand.run(func() error { return c.fetchChunk(c.life.ctx, c.demandSource(), i, ch) })
			})
		}
		var buf bytes.Buffer
		buf.Grow(int(end - off))
		if _, err := c.demandSource().ReadRange(ctx, i, off, end-off, &buf); err != nil && !errors.Is(err, io.EOF) {
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
