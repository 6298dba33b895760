package peer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/cargo-migrate/cargo/internal/atomicfile"
)

// File names of the persisted identity inside the identity directory.
const (
	CertFileName = "peer-cert.pem"
	KeyFileName  = "peer-key.pem"
)

// certValidity is long on purpose: the certificate is pinned by fingerprint,
// not validated against a CA or the clock, and rotating it would invalidate
// every ticket handed out so far.
const certValidity = 20 * 365 * 24 * time.Hour

// Identity is the TLS identity of a source host's peer server: a self-signed
// certificate that clients pin by its fingerprint (carried in the Ticket).
type Identity struct {
	cert        tls.Certificate
	fingerprint string
}

// identityMu serialises creation inside one process so two callers racing on
// a fresh directory cannot end up with different identities.
var identityMu sync.Mutex

// LoadOrCreateIdentity loads the identity persisted in dir, or creates and
// persists a new one if dir holds none yet. The same directory always yields
// the same fingerprint, so restarting the plugin keeps issued tickets valid.
//
// The certificate file is the commit point: it is renamed into place last, so
// a crash during creation leaves either no identity (a fresh one is made next
// time) or a complete one. A present but unreadable identity is an error, not
// a reason to silently mint a new fingerprint.
func LoadOrCreateIdentity(dir string) (*Identity, error) {
	identityMu.Lock()
	defer identityMu.Unlock()

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the peer identity directory %s: %w", dir, err)
	}
	certPath := filepath.Join(dir, CertFileName)
	keyPath := filepath.Join(dir, KeyFileName)

	if _, err := os.Stat(certPath); err == nil {
		return loadIdentity(certPath, keyPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading the peer identity in %s: %w", dir, err)
	}

	certPEM, keyPEM, err := newSelfSigned()
	if err != nil {
		return nil, err
	}
	// Key first, certificate last: see the doc comment.
	if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("saving the peer key: %w", err)
	}
	if err := atomicfile.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("saving the peer certificate: %w", err)
	}
	return loadIdentity(certPath, keyPath)
}

func loadIdentity(certPath, keyPath string) (*Identity, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("reading the peer certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reading the peer key (the certificate %s exists but its key does not; "+
			"remove both to create a new identity, which invalidates issued tickets): %w", certPath, err)
	}
	// Tighten permissions if someone loosened them: the key is the identity.
	if st, err := os.Stat(keyPath); err == nil && st.Mode().Perm()&0o077 != 0 {
		_ = os.Chmod(keyPath, 0o600)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the peer identity in %s is damaged (remove both files to create a new one, "+
			"which invalidates issued tickets): %w", filepath.Dir(certPath), err)
	}
	return &Identity{cert: cert, fingerprint: fingerprintDER(cert.Certificate[0])}, nil
}

func newSelfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the peer key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generating a certificate serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "cargo-peer"},
		DNSNames:              []string{"cargo-peer"},
		NotBefore:             now.Add(-time.Hour), // tolerate clock skew
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the peer certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the peer key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// Fingerprint returns "sha256:" followed by the lowercase hex SHA-256 of the
// DER certificate. It is what tickets carry and clients pin.
func (id *Identity) Fingerprint() string { return id.fingerprint }

// Certificate returns the TLS certificate (with its private key).
func (id *Identity) Certificate() tls.Certificate { return id.cert }

// TLSConfig returns a server TLS configuration presenting this identity.
// TLS 1.3 only: both ends are cargo, so there is no legacy client to serve.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{id.cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2", "http/1.1"},
		// Full-size records from the first byte: responses are bulk data,
		// and small records after every idle second cost CPU and syscalls.
		DynamicRecordSizingDisabled: true,
	}
}

func fingerprintDER(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

var fingerprintRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidFingerprint reports whether s has the exact form Fingerprint returns.
func ValidFingerprint(s string) bool { return fingerprintRE.MatchString(s) }

// FingerprintError is returned (wrapped in the connection error) when the
// peer's certificate is not the pinned one.
type FingerprintError struct {
	Server   string // server name or address dialled, for the message
	Expected string
	Got      string
}

func (e *FingerprintError) Error() string {
	return fmt.Sprintf("the certificate fingerprint of the cargo peer %s did not match the ticket: expected %s, got %s "+
		"(the ticket is for another host, the source host's identity was reset, or the connection is being intercepted)",
		e.Server, e.Expected, e.Got)
}

// Is makes errors.Is(err, ErrFingerprintMismatch) true.
func (e *FingerprintError) Is(target error) bool { return target == ErrFingerprintMismatch }

// ErrFingerprintMismatch matches a *FingerprintError with errors.Is.
var ErrFingerprintMismatch = errors.New("peer certificate fingerprint mismatch")

// PinnedTLSConfig returns a client TLS configuration that accepts exactly the
// certificate whose fingerprint is given, regardless of names, CAs or dates:
// the fingerprint travelled out of band in the ticket, which is a stronger
// statement than any CA could make about a self-signed plugin certificate.
func PinnedTLSConfig(fingerprint string) (*tls.Config, error) {
	if !ValidFingerprint(fingerprint) {
		return nil, fmt.Errorf("invalid certificate fingerprint %q: want sha256: and 64 lowercase hex digits", fingerprint)
	}
	want := []byte(fingerprint)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Chain and name verification is replaced by VerifyConnection below.
		InsecureSkipVerify: true, //nolint:gosec // pinned by fingerprint in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &FingerprintError{Server: cs.ServerName, Expected: fingerprint, Got: "no certificate"}
			}
			got := fingerprintDER(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
				return &FingerprintError{Server: cs.ServerName, Expected: fingerprint, Got: got}
			}
			return nil
		},
	}, nil
}
