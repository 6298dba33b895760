package replica

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/failpoint"
)

// ErrFinished is returned by Partial.ReadAt once the file is complete:
// read it from the replica instead.
var ErrFinished = errors.New("file is complete")

// Partial is a large file being filled chunk by chunk.
type Partial struct {
	r     *Replica
	index int
	size  int64

	mu     sync.Mutex
	chunks map[int]bool // journaled: on disk, and recorded
	queued map[int]bool // written, waiting for a sync

	// syncMu lets one caller at a time sync the file and journal every
	// chunk queued before the sync began: those who queue meanwhile are
	// covered by the next sync, one for all of them.
	syncMu sync.Mutex

	// rw keeps reads off the file while it is committed and closed.
	rw       sync.RWMutex
	finished bool
	f        *os.File
	log      *os.File
}

func chunkCount(size int64) int { return int((size + ChunkSize - 1) / ChunkSize) }

func chunkLen(size int64, c int) int64 {
	return min(ChunkSize, size-int64(c)*ChunkSize)
}

func chunkBytes(size int64, chunks map[int]bool) int64 {
	var n int64
	for c := range chunks {
		n += chunkLen(size, c)
	}
	return n
}

// Partial opens large file i for filling; the same Partial is returned to
// every caller until the file is complete. A file already in place has its
// missing names mended, and one whose chunks are all journaled is
// committed now: both return ErrFinished.
func (r *Replica) Partial(i int) (*Partial, error) {
	// A Partial being finished stays here until the file is in place:
	// making a new one then would create an empty file in its place.
	r.mu.Lock()
	p, ok := r.parts[i]
	s := r.state[i]
	r.mu.Unlock()
	switch {
	case ok:
		return p, nil
	case s == done:
		return nil, ErrFinished
	case s == placed:
		if err := r.mend(i); err != nil {
			return nil, err
		}
		return nil, ErrFinished
	}
	defer r.lockEntry(i)()
	r.mu.Lock()
	p, ok = r.parts[i]
	s = r.state[i]
	r.mu.Unlock()
	switch {
	case ok:
		return p, nil
	case s != missing:
		if err := r.mendLocked(i); err != nil {
			return nil, err
		}
		return nil, ErrFinished
	}
	p, err := r.openPartial(i)
	if err != nil {
		return nil, fmt.Errorf("opening %q: %w", r.m.Entries[i].Path, err)
	}
	if p == nil {
		return nil, ErrFinished
	}
	r.mu.Lock()
	r.parts[i] = p
	r.mu.Unlock()
	return p, nil
}

// openPartial opens large file i's partial file and log, or commits the
// file if they hold all of it (then it returns nil). Called with i's
// commit lock held and i missing.
func (r *Replica) openPartial(i int) (*Partial, error) {
	e := &r.m.Entries[i]
	n := chunkCount(e.Size)
	// In place already: a rename whose state this process lost.
	if fi, err := r.root.Lstat(dataPath(e)); err == nil && fi.Mode().IsRegular() && fi.Size() == e.Size {
		r.setState(i, placed)
		if err := r.mendLocked(i); err != nil {
			return nil, err
		}
		return nil, r.removeLog(i)
	}
	chunks, clean := map[int]bool{}, false
	f, err := r.root.OpenFile(partialPath(i, ""), os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f, err = r.root.OpenFile(partialPath(i, ""), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		// A log is about a partial file of the full size; the size is
		// on disk before any record (the first sync covers it).
		fi, err := f.Stat()
		if err == nil && fi.Size() == e.Size {
			chunks, clean, err = readLog(r.root, i, n)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Truncate(e.Size); err != nil {
		f.Close()
		return nil, err
	}
	if !clean && len(chunks) > 0 {
		// An older version's log, whose chunks were never synced.
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			f.Close()
			return nil, err
		}
	}
	r.setJournaled(i, chunkBytes(e.Size, chunks))
	if len(chunks) == n {
		return nil, r.commitLarge(i, f, partialPath(i, ""))
	}
	log, err := openLog(r.root, i, chunks, clean)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Partial{r: r, index: i, size: e.Size, f: f, log: log, chunks: chunks, queued: map[int]bool{}}, nil
}

// setJournaled sets the journaled bytes of missing large file i to n.
func (r *Replica) setJournaled(i int, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state[i] == missing {
		r.bytes += n - r.journaled[i]
		r.journaled[i] = n
	}
}

func (p *Partial) close() {
	p.rw.Lock()
	p.finished = true
	p.f.Close()
	p.rw.Unlock()
	p.log.Close()
}

// Chunks is how many chunks the file has.
func (p *Partial) Chunks() int { return chunkCount(p.size) }

// Range returns chunk c's offset and length.
func (p *Partial) Range(c int) (off, n int64) {
	return int64(c) * ChunkSize, chunkLen(p.size, c)
}

// Has reports whether chunk c is present.
func (p *Partial) Has(c int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.chunks[c]
}

// Missing lists the chunks not yet present, in order.
func (p *Partial) Missing() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for c := 0; c < chunkCount(p.size); c++ {
		if !p.chunks[c] {
			out = append(out, c)
		}
	}
	return out
}

// WriterAt returns where chunk c's bytes go.
func (p *Partial) WriterAt() io.WriterAt { return p.f }

// ReadAt reads present bytes; the caller makes sure the chunks it reads
// are present.
func (p *Partial) ReadAt(b []byte, off int64) (int, error) {
	p.rw.RLock()
	defer p.rw.RUnlock()
	if p.finished {
		return 0, ErrFinished
	}
	return p.f.ReadAt(b, off)
}

// MarkChunk records chunk c as written, after its bytes are in the file.
// It returns once they are on disk and journaled. When it was the last
// one, the file is committed to the replica.
func (p *Partial) MarkChunk(c int) error {
	if err := failpoint.Inject("replica.chunk.before-log"); err != nil {
		return err
	}
	if c < 0 || c >= chunkCount(p.size) {
		return fmt.Errorf("journaling chunk %d of %q: it has %d chunks", c, p.r.m.Entries[p.index].Path, chunkCount(p.size))
	}
	p.mu.Lock()
	if p.chunks[c] {
		p.mu.Unlock()
		return nil
	}
	p.queued[c] = true
	p.mu.Unlock()

	p.syncMu.Lock()
	p.mu.Lock()
	if p.chunks[c] { // a sync that began after c was written covered it
		p.mu.Unlock()
		p.syncMu.Unlock()
		return nil
	}
	batch := slices.Sorted(maps.Keys(p.queued))
	clear(p.queued)
	p.mu.Unlock()

	err := p.journal(batch)
	var n int64
	p.mu.Lock()
	for _, b := range batch {
		if err != nil {
			p.queued[b] = true // for the next sync to try again
		} else {
			p.chunks[b] = true
			n += chunkLen(p.size, b)
		}
	}
	all := err == nil && len(p.chunks) == chunkCount(p.size)
	p.mu.Unlock()
	p.syncMu.Unlock()
	if err != nil {
		return fmt.Errorf("journaling chunk %d of %q: %w", c, p.r.m.Entries[p.index].Path, err)
	}
	p.r.addJournaled(p.index, n)
	if all {
		return p.finish()
	}
	return nil
}

// journal makes the chunks' bytes durable, then records them: a record
// never names bytes a power cut could lose.
func (p *Partial) journal(chunks []int) error {
	if err := failpoint.Inject("replica.chunk.before-sync"); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(p.f.Fd())); err != nil {
		return err
	}
	if err := failpoint.Inject("replica.chunk.before-record"); err != nil {
		return err
	}
	rec := make([]byte, 0, len(chunks)*recordLen)
	for _, c := range chunks {
		rec = appendRecord(rec, c)
	}
	_, err := p.log.Write(rec)
	return err
}

// finish commits the file once every chunk is journaled. Whatever
// happens, this Partial is done with: after a failure the next Partial of
// the file finds every chunk journaled and commits it.
func (p *Partial) finish() error {
	r := p.r
	defer r.lockEntry(p.index)()
	// Readers of the partial wait for the commit, then find it finished
	// and the file in place.
	p.rw.Lock()
	p.finished = true
	p.log.Close()
	err := failpoint.Inject("replica.finish.before-commit")
	if err == nil {
		err = r.commitLarge(p.index, p.f, partialPath(p.index, ""))
	} else {
		p.f.Close()
	}
	p.rw.Unlock()
	r.mu.Lock()
	delete(r.parts, p.index)
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("completing %q: %w", r.m.Entries[p.index].Path, err)
	}
	return nil
}
