package commands

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/migrate"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// update rewrites the golden files: go test ./cli-plugin/commands -update
var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/NAME.golden.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: create it with go test ./cli-plugin/commands -update", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (if the change is meant, rerun with -update)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

// statusNow is the fixtures' present, in UTC so that clock renders the
// same in every time zone.
var statusNow = time.Date(2026, 11, 23, 16, 5, 0, 0, time.UTC)

func statusRows() []migrate.VolumeStatus {
	at := func(h, m, s int) time.Time { return time.Date(2026, 11, 23, h, m, s, 0, time.UTC) }
	return []migrate.VolumeStatus{
		{Container: "web", Volume: "web-data", Source: "198.18.0.1:7450", State: "copying",
			FilesCopied: 120, FilesTotal: 400, BytesCopied: 1342177280, BytesTotal: 2147483648, Rate: 10485760, ETA: "1m22s",
			StartedAt: at(16, 0, 0), UpdatedAt: at(16, 4, 59)},
		{Container: "web", Volume: "web-cache", Source: "198.18.0.1:7450", State: "stalled", Error: "connection refused",
			FilesCopied: 3, FilesTotal: 10, BytesCopied: 512, BytesTotal: 4096, ETA: "-", StartedAt: at(16, 0, 0), UpdatedAt: at(16, 2, 0)},
		{Container: "db", Volume: "pgdata", Source: "198.18.0.2:7450", State: "complete",
			FilesCopied: 1500, FilesTotal: 1500, BytesCopied: 52428800, BytesTotal: 52428800, ETA: "done",
			StartedAt: time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC), UpdatedAt: time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC),
			CompletedAt: time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)},
		{Container: "queue", Volume: "q", Source: "198.18.0.2:7450", State: "failed", Error: "disk full", ETA: "-"},
	}
}

func TestPrintStatusesGolden(t *testing.T) {
	tests := []struct {
		name, format string
		rows         []migrate.VolumeStatus
	}{
		{"status", "", statusRows()},
		{"status-empty", "table", nil},
		{"status-template", "{{.Container}}/{{.Volume}} {{.State}} {{.ETA}}", statusRows()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printStatuses(&b, mustFormat(t, tt.format), tt.rows, statusNow); err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, b.Bytes())
		})
	}
}

func TestPrintStatusesJSON(t *testing.T) {
	for _, rows := range [][]migrate.VolumeStatus{nil, statusRows()} {
		var b bytes.Buffer
		if err := printStatuses(&b, mustFormat(t, "json"), rows, statusNow); err != nil {
			t.Fatal(err)
		}
		back := jsonLines[migrate.VolumeStatus](t, b.Bytes())
		if len(back) != len(rows) {
			t.Fatalf("%d rows back from %s", len(back), b.Bytes())
		}
		for i := range rows {
			if !statusEqual(back[i], rows[i]) {
				t.Errorf("row %d: got %+v, want %+v", i, back[i], rows[i])
			}
		}
	}
}

func statusEqual(a, b migrate.VolumeStatus) bool {
	// Times compare by instant: JSON drops the location.
	ta := []time.Time{a.StartedAt, a.UpdatedAt, a.CompletedAt}
	tb := []time.Time{b.StartedAt, b.UpdatedAt, b.CompletedAt}
	for i := range ta {
		if !ta[i].Equal(tb[i]) {
			return false
		}
	}
	a.StartedAt, a.UpdatedAt, a.CompletedAt = time.Time{}, time.Time{}, time.Time{}
	b.StartedAt, b.UpdatedAt, b.CompletedAt = time.Time{}, time.Time{}, time.Time{}
	return a == b
}

func TestClock(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		t    time.Time
		now  time.Time
		want string
	}{
		{"zero", time.Time{}, statusNow, "-"},
		{"today", statusNow.Add(-time.Hour), statusNow, "15:05:00"},
		{"older", statusNow.Add(-25 * time.Hour), statusNow, "2026-11-22 15:05"},
		{"in now's zone", statusNow.Add(-time.Hour), statusNow.In(paris), "16:05:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clock(tt.t, tt.now); got != tt.want {
				t.Fatalf("clock = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRenderProgressGolden(t *testing.T) {
	for _, width := range []int{120, 80, 40} {
		t.Run("width"+strconv.Itoa(width), func(t *testing.T) {
			got := renderProgress(statusRows(), width)
			for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
				if n := len([]rune(l)); n > width {
					t.Errorf("line of %d columns on a terminal of %d: %q", n, width, l)
				}
			}
			if strings.Contains(got, "\x1b") {
				t.Errorf("escape codes in a frame: %q", got)
			}
			golden(t, "watch-"+strconv.Itoa(width), []byte(got))
		})
	}
}

func TestBar(t *testing.T) {
	tests := []struct {
		pct, width int
		want       string
	}{
		{0, 10, "[>         ]"},
		{61, 10, "[======>   ]"},
		{99, 10, "[=========>]"},
		{100, 10, "[==========]"},
		{50, 4, "[==> ]"},
	}
	for _, tt := range tests {
		if got := bar(tt.pct, tt.width); got != tt.want {
			t.Errorf("bar(%d, %d) = %q, want %q", tt.pct, tt.width, got, tt.want)
		}
	}
}

func TestWatchPercent(t *testing.T) {
	tests := []struct {
		name string
		r    migrate.VolumeStatus
		want int
	}{
		{"unknown total", migrate.VolumeStatus{State: "copying"}, 0},
		{"part", migrate.VolumeStatus{State: "copying", BytesCopied: 61, BytesTotal: 100}, 61},
		{"all bytes but not complete", migrate.VolumeStatus{State: "copying", BytesCopied: 100, BytesTotal: 100}, 99},
		{"complete", migrate.VolumeStatus{State: "complete"}, 100},
	}
	for _, tt := range tests {
		if got := watchPercent(tt.r); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestRedraw(t *testing.T) {
	tests := []struct {
		lines int
		frame string
		want  string
	}{
		{0, "a\nb\n", "a\nb\n"},
		{2, "a\nb\n", "\x1b[2A\r\x1b[Ja\nb\n"},
		{3, "", "\x1b[3A\r\x1b[J"},
	}
	for _, tt := range tests {
		if got := redraw(tt.lines, tt.frame); got != tt.want {
			t.Errorf("redraw(%d, %q) = %q, want %q", tt.lines, tt.frame, got, tt.want)
		}
	}
}

func TestPlainWatch(t *testing.T) {
	vs := func(state volstatus.State, copied int64) []migrate.VolumeStatus {
		return []migrate.VolumeStatus{{Container: "web", Volume: "data", State: state, BytesCopied: copied, BytesTotal: 1000, Rate: 1024, ETA: "1s"}}
	}
	p := plainWatch{last: map[string]string{}}
	steps := []struct {
		rows []migrate.VolumeStatus
		want string
	}{
		{vs("copying", 100), "web/data  10%  100B/1000B  1KiB/s  ETA 1s  copying\n"},
		{vs("copying", 105), ""},
		{vs("copying", 200), "web/data  20%  200B/1000B  1KiB/s  ETA 1s  copying\n"},
		{vs("stalled", 200), "web/data  20%  200B/1000B  1KiB/s  ETA 1s  stalled\n"},
	}
	for i, s := range steps {
		got := p.lines(s.rows)
		if got != s.want {
			t.Errorf("step %d: %q, want %q", i, got, s.want)
		}
		if strings.Contains(got, "\x1b") {
			t.Errorf("step %d: escape codes: %q", i, got)
		}
	}
}

func TestWatchEnd(t *testing.T) {
	tests := []struct {
		name    string
		states  []volstatus.State
		copying bool
		err     string
	}{
		{"none", nil, false, ""},
		{"copying", []volstatus.State{"complete", "copying"}, true, ""},
		{"stalled", []volstatus.State{"stalled"}, true, ""},
		{"complete", []volstatus.State{"complete", "complete"}, false, ""},
		{"failed", []volstatus.State{"complete", "failed"}, false, "the copy failed for volume v1 of web: disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rows []migrate.VolumeStatus
			for i, s := range tt.states {
				rows = append(rows, migrate.VolumeStatus{Container: "web", Volume: "v" + strconv.Itoa(i), State: s, Error: map[bool]string{true: "disk full"}[s == "failed"]})
			}
			if got := copying(rows); got != tt.copying {
				t.Errorf("copying = %v", got)
			}
			err := failures(rows)
			if (err == nil) != (tt.err == "") || err != nil && err.Error() != tt.err {
				t.Errorf("failures = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestWatchRefusesFormats(t *testing.T) {
	for _, f := range []string{"json", "{{.State}}"} {
		// The format is refused before the engine is asked: no client needed.
		err := runStatus(t.Context(), nil, nil, statusOptions{watch: true, format: f})
		if err == nil || !strings.Contains(err.Error(), "--watch") {
			t.Errorf("--watch --format %s: %v", f, err)
		}
	}
}
