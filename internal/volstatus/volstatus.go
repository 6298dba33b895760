// Package volstatus is the Status of a cargo volume as `docker volume
// inspect` shows it: one typed record with its state constants, and its
// conversion to and from the map the volume API carries. The plugin writes
// it; docker migrate and users' scripts read it, so the key names are an
// interface and do not change.
package volstatus

import (
	"encoding/json"
	"time"
)

// State is where a cargo volume stands.
type State string

// States of a cargo volume.
const (
	// StateLocal: a plain local volume, never moved or settled.
	StateLocal State = "local"
	// StateExporting: frozen on the source while a target copies it; on
	// an export volume, while its export is open.
	StateExporting State = "exporting"
	// StateCopying, StateStalled, StateComplete and StateFailed are the
	// copy of a federated volume on the target; StateComplete is also a
	// closed export.
	StateCopying  State = "copying"
	StateStalled  State = "stalled"
	StateComplete State = "complete"
	StateFailed   State = "failed"
)

// HostInfo is the reserved volume name whose Status carries a host's cargo
// facts (Host) rather than a volume's.
const HostInfo = "cargo.host"

// Status is one volume's Status. Which fields are set depends on the
// volume: a local one has State only; an exporting one Export and To; a
// federated one the copy's fields; an export volume (NAME.cargo-export)
// Volume, To, ExportID, Ticket and, once closed, Report.
type Status struct {
	State State `json:"state"`

	// A volume frozen for an export: the export volume and its target.
	Export string `json:"export,omitempty"`
	To     string `json:"to,omitempty"`

	// A federated volume: its source (host:port of the source's peer
	// service) and, when docker migrate moved it, the source's context.
	Source        string `json:"source,omitempty"`
	SourceContext string `json:"source_context,omitempty"`
	// Settled is set once every file is local and the source is no
	// longer needed.
	Settled     bool   `json:"settled,omitempty"`
	StartedAt   string `json:"started_at,omitempty"`
	UpdatedAt   string `json:"updated_at,omitempty"`
	CompletedAt string `json:"completed_at,omitempty"`
	FilesTotal  int64  `json:"files_total"`
	FilesCopied int64  `json:"files_copied"`
	BytesTotal  int64  `json:"bytes_total"`
	BytesCopied int64  `json:"bytes_copied"`
	// Rate is bytes per second over the last few seconds.
	Rate  int64  `json:"rate"`
	Error string `json:"error,omitempty"`

	// An export volume: the volume it exports, its ID and ticket, and the
	// target's report once the copy is complete.
	Volume   string `json:"volume,omitempty"`
	ExportID string `json:"export_id,omitempty"`
	Ticket   string `json:"ticket,omitempty"`
	Report   string `json:"report,omitempty"`
}

// Host is the Status of the reserved HostInfo volume.
type Host struct {
	Version     string `json:"version"`
	Advertise   string `json:"advertise"`
	Fingerprint string `json:"fingerprint"`
	// FreeBytes and TotalBytes are left out when they could not be
	// measured (Error says why): a full disk still says 0.
	FreeBytes  int64  `json:"free_bytes"`
	TotalBytes int64  `json:"total_bytes"`
	Error      string `json:"error,omitempty"`
	// MemAvailableBytes is the host's available memory (MemAvailable of
	// /proc/meminfo), for a live move's memory check; 0 when unknown.
	MemAvailableBytes int64 `json:"mem_available_bytes,omitempty"`
	// CPUFlags are the CPU's feature flags (/proc/cpuinfo), space
	// separated: a live move's processes may use any of the source's,
	// so the target must offer them all.
	CPUFlags string `json:"cpu_flags,omitempty"`
	// XSaveFeatures (a hexadecimal mask), XSaveSize and XSaveMaxSize are
	// the CPU's extended state (CPUID leaf 0xD): CRIU restores registers
	// from a save area of the source's layout, so the target must save
	// every component the source does, in an area of the same size.
	XSaveFeatures string `json:"xsave_features,omitempty"`
	XSaveSize     int64  `json:"xsave_size,omitempty"`
	XSaveMaxSize  int64  `json:"xsave_max_size,omitempty"`
}

// Time formats t as the Status carries times: RFC 3339 in UTC with
// milliseconds, enough to time a copy from its own timestamps; "" for the
// zero time.
func Time(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// ParseTime reads a time written by Time; the zero time for "" or garbage.
func ParseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return t
}

// Map is the Status as the volume API carries it. A federated volume
// always shows its counters and its start and completion times ("" until
// then); other volumes show only the keys that concern them.
func (s Status) Map() map[string]any {
	m := toMap(s)
	switch {
	case s.Source != "":
		m["started_at"], m["completed_at"] = s.StartedAt, s.CompletedAt
	case s.Volume != "":
		m["completed_at"] = s.CompletedAt
		delete(m, "files_copied")
		delete(m, "bytes_copied")
		delete(m, "rate")
	default:
		for _, k := range []string{"files_total", "files_copied", "bytes_total", "bytes_copied", "rate"} {
			delete(m, k)
		}
	}
	return m
}

// Map is the host facts as the volume API carries them.
func (h Host) Map() map[string]any {
	m := toMap(h)
	if h.Error != "" {
		delete(m, "free_bytes")
		delete(m, "total_bytes")
	}
	return m
}

// Parse reads a volume's Status as the engine API returned it (numbers
// arrive as float64). Unknown keys are ignored, missing ones left zero.
func Parse(m map[string]any) Status {
	var s Status
	fromMap(m, &s)
	return s
}

// ParseHost reads the Status of the HostInfo volume.
func ParseHost(m map[string]any) Host {
	var h Host
	fromMap(m, &h)
	return h
}

// toMap and fromMap go through JSON: the map is JSON on the wire anyway,
// and one set of struct tags then names every key once.
func toMap(v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only strings, numbers and bools: cannot fail
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	return m
}

func fromMap(m map[string]any, v any) {
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	// A field of the wrong type leaves the others decoded.
	_ = json.Unmarshal(b, v)
}
