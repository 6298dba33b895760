package federation_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// metricsOf scrapes h's plugin as Prometheus would (tests/hosts.sh sets
// METRICS_ADDR=127.0.0.1:9450 inside each host): each sample by its name
// and labels, as the text format writes them.
func metricsOf(t *testing.T, h *harness.Host) map[string]float64 {
	t.Helper()
	r := h.Exec(harness.Ctx(t), "curl", "-sSf", "--max-time", "10", "http://127.0.0.1:9450/metrics")
	if r.Err != nil {
		t.Fatalf("scraping %s's plugin: %v\n%s", h.Name, r.Err, r.Combined())
	}
	out := map[string]float64{}
	for _, l := range strings.Split(r.Stdout, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("a sample that does not parse: %q", l)
		}
		out[l[:i]] = v
	}
	return out
}

// The plugins' metrics show a federated volume's state and copy on the
// target, the export and the peer requests on the source, and are served
// only inside the host.
func TestMetrics(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	env.PluginLogOnFailure(t)
	vol := src.Unique(t, "v")
	src.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	const size = 48 << 20
	src.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > /data/blob", size))
	src.Throttle(t, "100mbit")
	ctrl := federate(t, src, dst, vol)
	mid := midCopy(t, dst, vol)

	m := metricsOf(t, dst)
	sel := fmt.Sprintf(`{volume=%q}`, vol)
	if m[fmt.Sprintf(`cargo_volume_state{state="copying",volume=%q}`, vol)] != 1 {
		t.Errorf("the target's metrics do not show %s copying: %v", vol, m)
	}
	if got := m["cargo_volume_bytes_total"+sel]; got != size {
		t.Errorf("cargo_volume_bytes_total = %v, want %d", got, size)
	}
	if got := m["cargo_volume_bytes_copied"+sel]; got < float64(mid) || got >= size {
		t.Errorf("cargo_volume_bytes_copied = %v mid-copy, want from %d and below %d", got, mid, size)
	}
	if m["cargo_volume_files_total"+sel] != 1 {
		t.Errorf("cargo_volume_files_total = %v, want 1", m["cargo_volume_files_total"+sel])
	}
	s := metricsOf(t, src)
	if s["cargo_exports_served"] < 1 || s[fmt.Sprintf(`cargo_volume_state{state="exporting",volume=%q}`, vol)] != 1 {
		t.Errorf("the source's metrics do not show the export: served %v", s["cargo_exports_served"])
	}
	if s[`cargo_peer_requests_total{code="200",route="GET /v1/exports/{id}/manifest"}`] < 1 {
		t.Errorf("the source counted no manifest request")
	}

	waitState(t, dst, vol, "complete", 2*time.Minute)
	m = metricsOf(t, dst)
	if m[fmt.Sprintf(`cargo_volume_state{state="complete",volume=%q}`, vol)] != 1 || m["cargo_volume_bytes_copied"+sel] != size {
		t.Errorf("the target's metrics after the copy: state complete %v, bytes copied %v",
			m[fmt.Sprintf(`cargo_volume_state{state="complete",volume=%q}`, vol)], m["cargo_volume_bytes_copied"+sel])
	}
	waitState(t, src, ctrl, "complete", time.Minute)

	// Served on the host's loopback only: another host cannot scrape it.
	if r := dst.Exec(harness.Ctx(t), "curl", "-sSf", "--max-time", "3", "http://198.18.0.1:9450/metrics"); r.Err == nil {
		t.Errorf("%s's metrics are reachable from %s", src.Name, dst.Name)
	}
}
