package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

type fakeVolumes struct {
	vols []*volume.Volume
	err  error
}

func (f fakeVolumes) List() (*volume.ListResponse, error) {
	return &volume.ListResponse{Volumes: f.vols}, f.err
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return string(b)
}

func TestVolumeMetrics(t *testing.T) {
	m := New(fakeVolumes{vols: []*volume.Volume{
		{Name: "plain", Status: map[string]any{"state": "local"}},
		{Name: "pgdata", Status: map[string]any{"state": "copying", "source": "198.18.0.1:7450",
			"files_total": 10, "files_copied": 4, "bytes_total": 1000, "bytes_copied": 400, "rate": 50}},
		{Name: "web", Status: map[string]any{"state": "exporting", "export": "web.cargo-export", "to": "h2"}},
		{Name: "web.cargo-export", Status: map[string]any{"state": "exporting", "volume": "web", "export_id": "ab12"}},
		{Name: "old.cargo-export", Status: map[string]any{"state": "complete", "volume": "old", "export_id": "cd34"}},
	}})
	m.ObservePeerRequest("GET /v1/exports/{id}/manifest", 200, 3*time.Millisecond)
	m.ObservePeerRequest("GET /v1/exports/{id}/manifest", 401, time.Millisecond)
	out := scrape(t, m)
	for _, want := range []string{
		`cargo_volume_state{state="local",volume="plain"} 1`,
		`cargo_volume_state{state="copying",volume="pgdata"} 1`,
		`cargo_volume_bytes_total{volume="pgdata"} 1000`,
		`cargo_volume_bytes_copied{volume="pgdata"} 400`,
		`cargo_volume_files_copied{volume="pgdata"} 4`,
		`cargo_volume_copy_rate_bytes{volume="pgdata"} 50`,
		"cargo_exports_served 1",
		"cargo_volumes 5",
		"cargo_volumes_listed 1",
		`cargo_peer_requests_total{code="401",route="GET /v1/exports/{id}/manifest"} 1`,
		`cargo_peer_request_duration_seconds_count{route="GET /v1/exports/{id}/manifest"} 2`,
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(out, want+"\n") && !strings.Contains(out, want+" ") {
			t.Errorf("no %q in the metrics", want)
		}
	}
	if strings.Contains(out, `cargo_volume_bytes_total{volume="plain"}`) {
		t.Error("a local volume has copy metrics")
	}
}

func TestVolumesNotListed(t *testing.T) {
	out := scrape(t, New(fakeVolumes{err: errors.New("closing")}))
	if !strings.Contains(out, "cargo_volumes_listed 0\n") || strings.Contains(out, "cargo_volume_state") {
		t.Fatalf("metrics when the volumes cannot be listed:\n%s", out)
	}
}
