package copier

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/replica"
)

// How often a copy stopped by a full disk looks for space, and how long
// it waits at most before trying again anyway (a quota, which statfs does
// not show, may have been raised).
const (
	roomPoll     = time.Second
	roomRetry    = 10 * time.Second
	roomRetryMax = 2 * time.Minute
)

// roomFresh is how long a full disk sends reads straight to the source
// before they try writing again.
const roomFresh = 10 * time.Second

// diskFull reports errors that mean the replica's disk has no room.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// room remembers that the replica's disk was full, so that reads meanwhile
// take their bytes from the source instead of failing to write them, and
// wakes every background fetch waiting for space once one saw it freed.
type room struct {
	fullAt atomic.Int64 // unix nanoseconds; 0: not full

	mu     sync.Mutex
	freed  chan struct{} // closed when space was freed
	closed bool
}

// note records a full disk if err says so, and returns err.
func (r *room) note(err error) error {
	if diskFull(err) {
		r.fill()
	}
	return err
}

// fill records a full disk and returns what free closes.
func (r *room) fill() <-chan struct{} {
	r.fullAt.Store(time.Now().UnixNano())
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.freed == nil || r.closed {
		r.freed, r.closed = make(chan struct{}), false
	}
	return r.freed
}

func (r *room) free() {
	r.fullAt.Store(0)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.freed != nil && !r.closed {
		close(r.freed)
		r.closed = true
	}
}

// full reports whether the disk was full lately.
func (r *room) full() bool {
	t := r.fullAt.Load()
	return t != 0 && time.Since(time.Unix(0, t)) < roomFresh
}

// space is the disk's state as the replica's directory shows it.
type space struct {
	free     uint64
	measured bool
	noInodes bool // of a filesystem that counts them
	inodes   uint64
}

func (c *Copier) space() space {
	if c.opts.Dir == "" {
		return space{}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(c.opts.Dir, &fs); err != nil {
		return space{}
	}
	return space{free: fs.Bavail * uint64(fs.Bsize), measured: true, inodes: fs.Ffree, noInodes: fs.Files > 0 && fs.Ffree == 0}
}

// fullDiskError is why a copy stopped at a full disk: what it still needs,
// in the user's terms. It wraps the write's error.
type fullDiskError struct {
	need           int64 // more bytes to free; 0 if not known
	remaining      int64 // bytes still to copy
	remainingFiles int
	noInodes       bool // bytes are free, inodes are not
	err            error
}

func (e *fullDiskError) Error() string {
	const resume = "and the copy resumes by itself"
	switch {
	case errors.Is(e.err, syscall.EDQUOT):
		return fmt.Sprintf("the disk quota of the volume's filesystem is used up: %s still to copy; raise the quota or free space on this host %s",
			units.BytesSize(float64(e.remaining)), resume)
	case e.noInodes:
		return fmt.Sprintf("the disk holding the volume has no free inodes: %d more files to copy; free some on this host %s",
			e.remainingFiles, resume)
	case e.need > 0:
		return fmt.Sprintf("the disk holding the volume is full: %s more needed for the copy; free space on this host %s",
			units.BytesSize(float64(e.need)), resume)
	}
	return fmt.Sprintf("the disk holding the volume is full: %s still to copy; free space on this host %s",
		units.BytesSize(float64(e.remaining)), resume)
}

func (e *fullDiskError) Unwrap() error { return e.err }

// fullDisk says what the copy needs, given the disk's state s. The need is
// an upper bound: chunks half-written when the disk filled take space they
// will take again.
func (c *Copier) fullDisk(err error, s space) *fullDiskError {
	files, bytes := c.rep.Totals()
	fc, bc := c.rep.Progress()
	e := &fullDiskError{remaining: max(bytes-bc, 0), remainingFiles: max(files-fc, 0), err: err}
	if s.measured {
		e.need = max(e.remaining-int64(s.free), 0)
		e.noInodes = s.noInodes && e.need == 0
	}
	return e
}

// waitForRoom shows the copy stalled on a full disk and waits until space
// was freed (as this or another fetch waiting saw), or wait has passed, or
// ctx ended. Nothing is lost meanwhile:
// whole files not written are not in the replica, chunks journaled stay.
func (c *Copier) waitForRoom(ctx context.Context, cause error, wait time.Duration) error {
	freed := c.room.fill()
	before := c.space()
	report := func(s space) *fullDiskError {
		e := c.fullDisk(cause, s)
		c.status.set(StateStalled, e)
		return e
	}
	e := report(before)
	c.log.Warn("copy stalled: the disk is full; waiting for space", "error", cause, "need", e.need, "in", wait)
	tick := time.NewTicker(roomPoll)
	defer tick.Stop()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		case <-freed:
			return nil
		case <-tick.C:
		}
		now := c.space()
		if !now.measured || !before.measured {
			continue
		}
		e := report(now)
		// A chunk's worth more, or inodes again: try again.
		step := max(min(e.remaining, replica.ChunkSize), 64<<10)
		if now.free >= before.free+uint64(step) || before.noInodes && now.inodes > 0 {
			c.log.Info("space was freed; the copy resumes", "free", now.free)
			c.room.free()
			return nil
		}
	}
}
