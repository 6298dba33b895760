package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// acquire takes one of the export's MaxConcurrentPerExport slots; without
// one the client is told to come back (429) rather than queued.
func (s *Server) acquire(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[id] >= s.opts.MaxConcurrentPerExport {
		return false
	}
	s.inflight[id]++
	return true
}

// release returns a slot taken by acquire.
func (s *Server) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[id] <= 1 {
		delete(s.inflight, id) // keep the map from growing with dead exports
	} else {
		s.inflight[id]--
	}
}

// decodeBody reads a small JSON body under size and time limits, writing the
// error response itself when it fails.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.opts.BodyReadTimeout))
	// Lift the deadline again: on HTTP/1.1 it would otherwise cancel the
	// request while a long response is still streaming.
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()

	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Exactly one JSON value.
		if _, err2 := dec.Token(); err2 != io.EOF {
			err = errors.New("trailing data after the JSON body")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("request body larger than %d bytes", s.opts.MaxBodyBytes), http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "bad request body: "+shortMessage(err.Error()), http.StatusBadRequest)
		}
		return false
	}
	return true
}
