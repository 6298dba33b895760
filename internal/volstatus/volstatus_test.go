package volstatus

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"
)

func TestMapKeys(t *testing.T) {
	tests := []struct {
		name string
		st   Status
		want []string
	}{
		{"local", Status{State: StateLocal}, []string{"state"}},
		{"exporting", Status{State: StateExporting, Export: "v.cargo-export", To: "h2"}, []string{"export", "state", "to"}},
		{"federated, just created", Status{State: StateCopying, Source: "198.18.0.1:7450"}, []string{
			"bytes_copied", "bytes_total", "completed_at", "files_copied", "files_total", "rate", "source", "started_at", "state"}},
		{"settled", Status{State: StateComplete, Source: "a:1", SourceContext: "h1", Settled: true, FilesTotal: 3, FilesCopied: 3,
			StartedAt: "2026-01-01T00:00:00.000Z", CompletedAt: "2026-01-01T00:00:01.000Z", UpdatedAt: "2026-01-01T00:00:01.000Z"}, []string{
			"bytes_copied", "bytes_total", "completed_at", "files_copied", "files_total", "rate", "settled", "source", "source_context",
			"started_at", "state", "updated_at"}},
		{"export volume", Status{State: StateExporting, Volume: "v", To: "h2", ExportID: "x", Ticket: "cargo://..."}, []string{
			"bytes_total", "completed_at", "export_id", "files_total", "state", "ticket", "to", "volume"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := slices.Sorted(maps.Keys(tt.st.Map()))
			if !slices.Equal(got, tt.want) {
				t.Errorf("keys %v, want %v", got, tt.want)
			}
		})
	}
}

// The engine API hands the Status back as JSON: numbers as float64.
func TestParseAfterTheWire(t *testing.T) {
	in := Status{State: StateStalled, Source: "a:1", FilesTotal: 7, FilesCopied: 2, BytesTotal: 1 << 40, BytesCopied: 5,
		Rate: 1234, Error: "no route", StartedAt: Time(time.Date(2026, 12, 1, 10, 0, 0, 5e6, time.UTC))}
	b, err := json.Marshal(in.Map())
	if err != nil {
		t.Fatal(err)
	}
	var wire map[string]any
	if err := json.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	if got := Parse(wire); got != in {
		t.Errorf("Parse = %+v, want %+v", got, in)
	}
	if got := ParseTime(in.StartedAt); !got.Equal(time.Date(2026, 12, 1, 10, 0, 0, 5e6, time.UTC)) {
		t.Errorf("ParseTime = %v", got)
	}
	// A key of the wrong type leaves the others readable.
	if got := Parse(map[string]any{"state": "copying", "files_total": "many"}); got.State != StateCopying {
		t.Errorf("Parse with a bad key = %+v", got)
	}
	if h := ParseHost(map[string]any{"free_bytes": float64(1 << 33), "version": "v1"}); h.FreeBytes != 1<<33 || h.Version != "v1" {
		t.Errorf("ParseHost = %+v", h)
	}
}

func TestHostFullDisk(t *testing.T) {
	m := Host{Version: "v1", FreeBytes: 0, TotalBytes: 1 << 30}.Map()
	if v, ok := m["free_bytes"]; !ok || v != float64(0) {
		t.Errorf("a full disk: free_bytes = %v (present %v), want 0", v, ok)
	}
	m = Host{Version: "v1", Error: "measuring free space: EIO"}.Map()
	if _, ok := m["free_bytes"]; ok {
		t.Errorf("unmeasured space: free_bytes present: %v", m)
	}
}
