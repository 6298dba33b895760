package copier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

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
// first. A read waits for the source as long as ctx lets it, and fails
// only when the source is gone for good. When the replica cannot take the
// file (its disk full), the bytes come from the source all the same.
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
		read := c.readPartial
		if e.Size < replica.LargeFile {
			read = c.readSmall
		}
		n, err := read(ctx, i, p, off)
		if !errors.Is(err, errLocal) {
			return n, err
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

// errLocal tells ReadAt that the file is local now: read it there.
var errLocal = errors.New("the file is local")

// readSmall fetches small file i whole for a read, and reports errLocal;
// if the replica cannot take it, it reads the bytes asked for from the
// source.
func (c *Copier) readSmall(ctx context.Context, i int, p []byte, off int64) (int, error) {
	if !c.room.full() {
		err := c.demand.run(func() error { return c.fetchWhole(ctx, i) })
		switch {
		case err == nil:
			return 0, errLocal
		case ctx.Err() != nil:
			return 0, ctx.Err()
		case c.opts.Permanent(err):
			return 0, err
		}
		c.log.Debug("fetching a file for a read failed; reading the bytes from the source", "file", c.rep.Entry(i).Path, "error", err)
	}
	return c.readRemote(ctx, i, p, off)
}

// readPartial reads large file i: present chunks from the replica, missing
// ones from the source, their bytes first. It reports errLocal if the file
// was completed meanwhile.
func (c *Copier) readPartial(ctx context.Context, i int, p []byte, off int64) (int, error) {
	size := c.rep.Entry(i).Size
	end := min(off+int64(len(p)), size)
	p = p[:end-off]
	part, err := c.rep.Partial(i)
	if errors.Is(err, replica.ErrFinished) {
		return 0, errLocal
	}
	if err != nil {
		c.log.Debug("opening a partial file for a read failed; reading from the source", "file", c.rep.Entry(i).Path, "error", c.room.note(err))
		return c.readRemote(ctx, i, p, off)
	}
	var missing []int
	for ch := int(off / replica.ChunkSize); int64(ch)*replica.ChunkSize < end; ch++ {
		if !part.Has(ch) {
			missing = append(missing, ch)
		}
	}
	if len(missing) == 0 {
		n, err := part.ReadAt(p, off)
		if errors.Is(err, replica.ErrFinished) {
			return 0, errLocal
		}
		if err == nil && end == size {
			err = io.EOF
		}
		return n, err
	}
	// The first byte should not wait for whole chunks: fetch just the bytes
	// asked for and hand them over, while the chunks they belong to are
	// fetched (once, ahead of the background copy) for the reads that
	// follow, unless the disk is full. A chunk that fails is left to them
	// and to the background copy.
	if !c.room.full() {
		for _, ch := range missing {
			c.life.goOwned(func() {
				_ = c.demand.run(func() error { return c.fetchChunk(c.life.ctx, forReadAhead, c.demandSource(), i, ch) })
			})
		}
	}
	return c.readRemote(ctx, i, p, off)
}

// readRemote reads bytes [off, off+len(p)) of file i from the source into
// p, ahead of the chunk and batch transfers. It waits through a busy or
// unreachable source, with backoff, until ctx ends; it fails at once only
// when the source is gone for good.
func (c *Copier) readRemote(ctx context.Context, i int, p []byte, off int64) (int, error) {
	size := c.rep.Entry(i).Size
	p = p[:min(off+int64(len(p)), size)-off]
	backoff := 100 * time.Millisecond
	for {
		var got int64
		err := c.request(ctx, forRead, func() (err error) {
			got, err = c.demandSource().ReadRange(ctx, i, off, int64(len(p)), &sliceWriter{p: p})
			return err
		})
		if err == nil || errors.Is(err, io.EOF) {
			n := int(got)
			if off+got == size {
				return n, io.EOF
			}
			return n, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if c.opts.Permanent(err) {
			return 0, err
		}
		c.log.Debug("a read waits for the source", "file", c.rep.Entry(i).Path, "error", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// sliceWriter writes into p, and no further.
type sliceWriter struct {
	p []byte
	n int
}

func (w *sliceWriter) Write(b []byte) (int, error) {
	n := copy(w.p[w.n:], b)
	w.n += n
	if n < len(b) {
		return n, io.ErrShortWrite
	}
	return n, nil
}
