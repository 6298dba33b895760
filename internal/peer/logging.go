package peer

import (
	"net/http"
	"time"
)

// statusRecorder captures what the logging middleware reports.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logRequests logs every request at debug level, and tells Observe. It
// never logs headers, so the credential cannot leak into logs.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		aborted := true
		defer func() {
			id := r.PathValue("id")
			if len(id) > 128 {
				id = id[:128]
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			took := time.Since(start)
			s.log.Debug("peer request", "export", id, "route", route, "status", status,
				"bytes", rec.bytes, "duration", took, "remote", r.RemoteAddr, "proto", r.Proto, "aborted", aborted)
			if s.opts.Observe != nil {
				s.opts.Observe(route, status, took)
			}
		}()
		next.ServeHTTP(rec, r)
		aborted = false
	})
}
