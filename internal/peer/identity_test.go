package peer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestIdentityPersistence(t *testing.T) {
	dir := t.TempDir()
	id1, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ValidFingerprint(id1.Fingerprint()) {
		t.Fatalf("bad fingerprint %q", id1.Fingerprint())
	}
	leaf := id1.Certificate().Leaf
	if leaf == nil || leaf.Subject.CommonName != "cargo-peer" {
		t.Fatalf("unexpected certificate %+v", leaf)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatal("not an ECDSA P-256 key")
	}
	if leaf.NotAfter.Before(time.Now().Add(19 * 365 * 24 * time.Hour)) {
		t.Fatalf("certificate expires too soon: %v", leaf.NotAfter)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("leftover files in the identity dir: %v", entries)
	}

	id2, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id2.Fingerprint() != id1.Fingerprint() {
		t.Fatal("fingerprint changed on reload")
	}
	id3, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if id3.Fingerprint() == id1.Fingerprint() {
		t.Fatal("a new directory produced the same fingerprint")
	}

	// A damaged identity is an error, never silently replaced.
	bad := t.TempDir()
	if _, err := LoadOrCreateIdentity(bad); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, KeyFileName), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIdentity(bad); err == nil {
		t.Fatal("damaged identity accepted")
	}

	// A crash after writing the key but before the certificate: start over.
	half := t.TempDir()
	if err := os.WriteFile(filepath.Join(half, KeyFileName), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIdentity(half); err != nil {
		t.Fatalf("half-created identity not recovered: %v", err)
	}
}

// A server restarted on the same identity directory keeps its fingerprint,
// so an existing ticket keeps working.
func TestServerRestartKeepsFingerprint(t *testing.T) {
	dir := t.TempDir()
	exp, token := newMemExport(t, [][]byte{[]byte("persisted")})
	exports := memExports{"e1": exp}

	run := func() (addr, fp string, stop func()) {
		id, err := LoadOrCreateIdentity(dir)
		if err != nil {
			t.Fatal(err)
		}
		srv := NewServer(exports, id, ServerOptions{}, nil)
		l := listen(t)
		go func() { _ = srv.Serve(l) }() // returns once srv is closed
		return l.Addr().String(), id.Fingerprint(), func() { srv.Close() }
	}
	addr1, fp1, stop1 := run()
	tk := Ticket{Addr: addr1, ExportID: "e1", Token: token, Fingerprint: fp1}
	read := func(tk Ticket) error {
		c := newTestClient(t, tk, ClientOptions{RetryMax: -1})
		var buf bytes.Buffer
		_, err := c.ReadRange(context.Background(), 0, 0, -1, &buf)
		if err == nil && buf.String() != "persisted" {
			t.Fatalf("got %q", buf.String())
		}
		return err
	}
	if err := read(tk); err != nil {
		t.Fatal(err)
	}
	stop1()

	addr2, fp2, stop2 := run()
	defer stop2()
	if fp2 != fp1 {
		t.Fatalf("fingerprint changed across restart: %s -> %s", fp1, fp2)
	}
	tk.Addr = addr2
	if err := read(tk); err != nil {
		t.Fatalf("old ticket rejected after restart: %v", err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
