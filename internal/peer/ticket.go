package peer

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// tokenBytes is the entropy of a bearer credential.
const tokenBytes = 32

// tokenEncoding is unpadded base64url: it survives URLs, Docker volume
// options and shell quoting without escaping.
var tokenEncoding = base64.RawURLEncoding.Strict()

// NewToken returns a fresh random bearer credential for one export and the
// hash the exporter stores (only the hash needs to be kept on the source).
func NewToken() (token string, hash [32]byte, err error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", hash, fmt.Errorf("generating an export credential: %w", err)
	}
	token = tokenEncoding.EncodeToString(b[:])
	return token, HashToken(token), nil
}

// HashToken is the hash compared against Export.TokenHash.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// ValidToken reports whether s has the exact form NewToken produces.
func ValidToken(s string) bool {
	if len(s) != tokenEncoding.EncodedLen(tokenBytes) {
		return false
	}
	b, err := tokenEncoding.DecodeString(s)
	return err == nil && len(b) == tokenBytes
}

var exportIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidExportID reports whether id is acceptable as an export id: 1 to 128
// characters of [A-Za-z0-9._-], not starting with '.', '_' or '-'. Such ids are
// safe in URL paths and in the ticket without escaping.
func ValidExportID(id string) bool { return exportIDRE.MatchString(id) }

// Ticket is everything a target host needs to reach one export: where the
// source's peer server listens, which export, the bearer credential and the
// pinned certificate fingerprint.
type Ticket struct {
	Addr        string // host:port (IPv6 in brackets)
	ExportID    string
	Token       string
	Fingerprint string // "sha256:<64 lowercase hex>"
}

const ticketScheme = "cargo://"

// maxTicketLen bounds parsing work on untrusted input; real tickets are ~200
// bytes.
const maxTicketLen = 1024

// String returns the compact form
//
//	cargo://EXPORTID:TOKEN@HOST:PORT?fp=sha256:HEX
//
// Every part is restricted to URL-safe characters, so no escaping happens and
// ParseTicket(t.String()) == t for a valid ticket.
func (t Ticket) String() string {
	return ticketScheme + t.ExportID + ":" + t.Token + "@" + t.Addr + "?fp=" + t.Fingerprint
}

// Redacted is String with the credential replaced, for logs and errors.
func (t Ticket) Redacted() string {
	return ticketScheme + t.ExportID + ":xxxxx@" + t.Addr + "?fp=" + t.Fingerprint
}

// Validate checks every field strictly.
func (t Ticket) Validate() error {
	if !ValidExportID(t.ExportID) {
		return fmt.Errorf("invalid cargo ticket: bad export id %q", t.ExportID)
	}
	if !ValidToken(t.Token) {
		// Never echo the token: it may be a real credential with a typo.
		return errors.New("invalid cargo ticket: the credential is malformed (want 43 base64url characters)")
	}
	if err := validateAddr(t.Addr); err != nil {
		return fmt.Errorf("invalid cargo ticket: %w", err)
	}
	if !ValidFingerprint(t.Fingerprint) {
		return fmt.Errorf("invalid cargo ticket: bad fingerprint %q (want sha256: and 64 lowercase hex digits)", t.Fingerprint)
	}
	return nil
}

// ParseTicket parses the form produced by Ticket.String. It is deliberately
// strict (no percent-escapes, no extra query parameters, no path) because the
// string arrives through the Docker API as a volume option.
func ParseTicket(s string) (Ticket, error) {
	if len(s) > maxTicketLen {
		return Ticket{}, fmt.Errorf("invalid cargo ticket: longer than %d bytes", maxTicketLen)
	}
	rest, ok := strings.CutPrefix(s, ticketScheme)
	if !ok {
		return Ticket{}, errors.New(`invalid cargo ticket: must start with "cargo://"`)
	}
	userinfo, rest, ok := strings.Cut(rest, "@")
	if !ok {
		return Ticket{}, errors.New("invalid cargo ticket: missing EXPORTID:TOKEN@ before the address")
	}
	id, token, ok := strings.Cut(userinfo, ":")
	if !ok {
		return Ticket{}, errors.New("invalid cargo ticket: missing the credential after the export id")
	}
	addr, query, ok := strings.Cut(rest, "?")
	if !ok {
		return Ticket{}, errors.New("invalid cargo ticket: missing ?fp=sha256:... (the certificate fingerprint)")
	}
	fp, ok := strings.CutPrefix(query, "fp=")
	if !ok {
		return Ticket{}, errors.New("invalid cargo ticket: the only query parameter must be fp=sha256:... (the certificate fingerprint)")
	}
	t := Ticket{Addr: addr, ExportID: id, Token: token, Fingerprint: fp}
	if err := t.Validate(); err != nil {
		return Ticket{}, err
	}
	return t, nil
}

var hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// validateAddr accepts HOST:PORT where HOST is an IPv4 address, a bracketed
// IPv6 address without zone, or a DNS name, and PORT is 1-65535 without
// leading zeros.
func validateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bad address %q: want HOST:PORT", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || strconv.FormatUint(p, 10) != port {
		return fmt.Errorf("bad port %q in address %q: want 1-65535", port, addr)
	}
	switch {
	case strings.HasPrefix(addr, "["):
		ip := net.ParseIP(host)
		if ip == nil || ip.To4() != nil && !strings.Contains(host, ":") {
			return fmt.Errorf("bad IPv6 address %q", host)
		}
	case strings.Contains(host, ":"):
		return fmt.Errorf("bad address %q: IPv6 addresses must be in brackets", addr)
	case net.ParseIP(host) != nil:
		// IPv4
	default:
		if len(host) == 0 || len(host) > 253 {
			return fmt.Errorf("bad host name %q", host)
		}
		for _, label := range strings.Split(host, ".") {
			if !hostLabelRE.MatchString(label) {
				return fmt.Errorf("bad host name %q", host)
			}
		}
	}
	return nil
}
