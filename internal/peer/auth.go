package peer

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// exportHandler serves one route for an authenticated export.
type exportHandler func(w http.ResponseWriter, r *http.Request, exp Export)

const unauthorizedBody = "unauthorized: unknown export or wrong credential\n"

// withExport authenticates the request and holds one of the export's
// concurrency slots while h runs.
func (s *Server) withExport(h exportHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		exp, ok := s.authenticate(r, id)
		if !ok {
			// Same answer for unknown export, wrong and missing credential:
			// a prober learns nothing about which exports exist. The
			// connection is closed after it (on HTTP/2: GOAWAY), so a
			// prober must pay a handshake for each guess.
			w.Header().Set("WWW-Authenticate", `Bearer realm="cargo"`)
			w.Header().Set("Connection", "close")
			http.Error(w, strings.TrimSuffix(unauthorizedBody, "\n"), http.StatusUnauthorized)
			return
		}
		markAuthenticated(r.Context())
		if !s.acquire(id) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "the source is busy serving this export; retry shortly", http.StatusTooManyRequests)
			return
		}
		defer s.release(id)
		h(w, r, exp)
	}
}

// dummyHash is compared against when the export is unknown so both paths do
// the same work.
var dummyHash = HashToken("cargo-no-such-export")

func (s *Server) authenticate(r *http.Request, id string) (Export, bool) {
	token, ok := bearerToken(r)
	if !ok {
		return nil, false
	}
	got := HashToken(token)
	var exp Export
	want := dummyHash
	found := false
	if ValidExportID(id) {
		if exp, found = s.exports.Lookup(id); found {
			want = exp.TokenHash()
		}
	}
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	if !found || !match {
		return nil, false
	}
	return exp, true
}

func bearerToken(r *http.Request) (string, bool) {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}
