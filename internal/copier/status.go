package copier

import (
	"sync"
	"time"
)

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
	// Error is why the copy is stalled or failed, for the user: a full
	// disk says how much more space the copy needs, and that it resumes
	// by itself once that is freed.
	Error string
}

// status is the copy's state and the samples its rate comes from.
type status struct {
	mu        sync.Mutex
	state     State
	lastErr   error
	rate      float64
	sampleAt  time.Time
	sampleB   int64
	lastBytes int64
	updated   time.Time // last progress
}

// Status reports progress.
func (c *Copier) Status() Status {
	files, bytes := c.rep.Totals()
	fc, bc := c.rep.Progress()
	st := &c.status
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	if st.sampleAt.IsZero() {
		st.sampleAt, st.sampleB = now, bc
	} else if dt := now.Sub(st.sampleAt).Seconds(); dt >= 1 {
		inst := float64(bc-st.sampleB) / dt
		st.rate = 0.5*st.rate + 0.5*inst // smooths bursts of batches
		st.sampleAt, st.sampleB = now, bc
	}
	if bc != st.lastBytes {
		st.lastBytes, st.updated = bc, now
	}
	s := Status{State: st.state, FilesTotal: files, FilesCopied: fc, BytesTotal: bytes, BytesCopied: bc, Rate: st.rate, Updated: st.updated}
	if st.lastErr != nil && st.state != StateComplete {
		s.Error = st.lastErr.Error()
	}
	if s.State == StateComplete {
		s.Rate = 0
	}
	return s
}

// set records a state unless the copy already ended.
func (st *status) set(s State, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.state == StateComplete || st.state == StateFailed {
		return
	}
	st.state, st.lastErr = s, err
}

// complete records the end of the copy.
func (st *status) complete() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.state, st.lastErr = StateComplete, nil
}
