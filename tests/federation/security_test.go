package federation_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// httpCode asks the peer service for path from host h with curl and
// returns the HTTP status and body.
func httpCode(t *testing.T, h *harness.Host, url string, headers ...string) (code, body string) {
	t.Helper()
	args := []string{"curl", "-sk", "--path-as-is", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"}
	for _, hd := range headers {
		args = append(args, "-H", hd)
	}
	r := h.Exec(harness.Ctx(t), append(args, url)...)
	if r.Err != nil {
		t.Fatalf("curl %s: %v", url, r.Err)
	}
	out := strings.TrimRight(r.Stdout, "\n")
	i := strings.LastIndex(out, "\n")
	return out[i+1:], out[:max(i, 0)]
}

// The peer service answers only the holder of an export's credential, and
// only with files of that export, named by index.
func TestPeerServiceRefusesStrangers(t *testing.T) {
	src, other := env.Hosts[0], env.Hosts[1]
	vol, _ := source(t, src, 1)
	ctrl, _ := export(t, src, other, vol)
	st := src.VolumeStatus(t, ctrl)
	id := st["export_id"].(string)
	ticket := st["ticket"].(string)
	token := ticket[len("cargo://")+len(id)+1 : strings.Index(ticket, "@")]
	base := "https://" + src.Addr + ":7450/v1/exports/"
	auth := "Authorization: Bearer " + token

	if code, _ := httpCode(t, other, base+id+"/manifest", auth); code != "200" {
		t.Fatalf("the right credential gets %s: the test does not reach the service", code)
	}
	refused := []struct {
		name, url string
		headers   []string
	}{
		{"anonymous", base + id + "/manifest", nil},
		{"wrong token", base + id + "/manifest", []string{"Authorization: Bearer " + strings.Repeat("A", len(token))}},
		{"token of another export", base + strings.Repeat("0", len(id)) + "/manifest", []string{auth}},
		{"basic auth", base + id + "/manifest", []string{"Authorization: Basic " + token}},
		{"anonymous file", base + id + "/files/1", nil},
	}
	for _, tt := range refused {
		if code, body := httpCode(t, other, tt.url, tt.headers...); code != "401" {
			t.Errorf("%s: HTTP %s %q, want 401", tt.name, code, body)
		}
	}
	tricks := []string{
		base + id + "/files/../../../../etc/passwd",
		base + id + "/files/..%2f..%2f..%2fetc%2fpasswd",
		base + id + "/files/%2fetc%2fpasswd",
		base + id + "/files/-1",
		base + id + "/files/99999999",
		base + id + "/files/0", // the root directory
		base + "../../../etc/passwd",
		base + id + "/files/1%00",
	}
	for _, url := range tricks {
		code, body := httpCode(t, other, url, auth)
		if code == "200" || code == "206" || strings.Contains(body, "root:x:0:0") {
			t.Errorf("%s: HTTP %s %q", url, code, body)
		}
	}
}

// Nothing of a volume's content travels in clear: a capture of the link
// during a copy holds none of a marker the volume is full of.
func TestNoPlaintextOnTheWire(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	marker := "CARGO-PLAINTEXT-CANARY-5f2a9c"
	vol := src.Unique(t, "v")
	src.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	src.Run(t, "-v", vol+":/data", env.Image, "sh", "-c",
		"i=0; while [ $i -lt 20000 ]; do echo "+marker+"; i=$((i+1)); done > /data/canary; mkdir /data/d; cp /data/canary /data/d/small")

	pcap := filepath.Join(t.TempDir(), "copy.pcap")
	capture := dst.Command("tcpdump", "-i", "eth0", "-U", "-B", "16384", "-s", "0", "-w", pcap, "tcp", "port", "7450")
	var stderr bytes.Buffer
	capture.Stderr = &stderr
	if err := capture.Start(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, "tcpdump listens", func() error {
		if !strings.Contains(stderr.String(), "listening on") {
			return fmt.Errorf("tcpdump: %q", stderr.String())
		}
		return nil
	})
	federate(t, src, dst, vol)
	waitState(t, dst, vol, "complete", 2*time.Minute)
	if got := dst.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", "grep -c "+marker+" /data/canary /data/d/small"); got != "/data/canary:20000\n/data/d/small:20000" {
		t.Fatalf("the copy is not what the source holds: %q", got)
	}
	// tcpdump writes what it captured a little after the copy is done:
	// wait until it holds at least the data, then stop it.
	copiedBytes := int64(2 * 20000 * (len(marker) + 1))
	harness.Eventually(t, 30*time.Second, "the capture holds the copy", func() error {
		fi, err := os.Stat(pcap)
		if err != nil {
			return err
		}
		if fi.Size() < copiedBytes {
			return fmt.Errorf("%d bytes captured, %d copied", fi.Size(), copiedBytes)
		}
		return nil
	})
	if err := capture.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("stopping tcpdump: %v", err)
	}
	// The capture file is what the test reads; the exit status adds nothing.
	_ = capture.Wait()
	b, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte("CARGO-PLAINTEXT")) {
		t.Fatal("the volume's content crossed the link in clear text")
	}
}
