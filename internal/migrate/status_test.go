package migrate

import (
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

func TestVolumeStatus(t *testing.T) {
	tests := []struct {
		name    string
		st      map[string]any
		ok      bool
		state   volstatus.State
		eta     string
		copied  int64
		started bool
	}{
		{"never moved", map[string]any{"state": "local"}, false, "", "", 0, false},
		{"copying", map[string]any{"state": "copying", "source": "198.18.0.1:7450", "bytes_copied": 100.0, "bytes_total": 1100.0,
			"rate": 10.0, "files_copied": 1.0, "files_total": 3.0, "started_at": "2026-11-23T16:00:00.000Z"}, true, "copying", "1m40s", 100, true},
		{"stalled", map[string]any{"state": "stalled", "source": "x:1", "rate": 0.0, "error": "connection refused"}, true, "stalled", "-", 0, false},
		{"complete", map[string]any{"state": "complete", "source": "x:1", "bytes_copied": 5.0, "bytes_total": 5.0,
			"completed_at": "2026-11-23T16:00:05.123Z"}, true, "complete", "done", 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := volumeStatus("web", "data", volstatus.Parse(tt.st))
			if ok != tt.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			if s.State != tt.state || s.ETA != tt.eta || s.BytesCopied != tt.copied || s.StartedAt.IsZero() == tt.started {
				t.Fatalf("%+v", s)
			}
			if tt.state == "stalled" && s.Error != "connection refused" {
				t.Fatalf("error %q", s.Error)
			}
			if tt.state == "complete" && !s.CompletedAt.Equal(time.Date(2026, 11, 23, 16, 0, 5, 123e6, time.UTC)) {
				t.Fatalf("completed %v", s.CompletedAt)
			}
		})
	}
}
