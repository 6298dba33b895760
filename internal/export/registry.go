package export

import (
	"sync"

	"github.com/cargo-migrate/cargo/internal/peer"
)

// Registry holds the open exports for the peer service.
type Registry struct {
	mu   sync.RWMutex
	byID map[string]*Export
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{byID: map[string]*Export{}} }

// Lookup implements peer.Exports.
func (r *Registry) Lookup(id string) (peer.Export, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.byID[id]
	return e, ok
}

// Add makes e reachable.
func (r *Registry) Add(e *Export) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byID[e.ID] = e
}

// Remove makes the export unreachable (its credential dies with it) and
// closes it.
func (r *Registry) Remove(id string) {
	r.mu.Lock()
	e := r.byID[id]
	delete(r.byID, id)
	r.mu.Unlock()
	if e != nil {
		e.Close()
	}
}
