package commands

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

func lsRows() []migrate.ContainerRow {
	return []migrate.ContainerRow{
		{Context: "default", Current: true, Container: "web", ID: "0a1b2c3d4e5f", Image: "nginx:1.27", State: "exited",
			Status: "Exited (0) 5 minutes ago", Migration: migrate.MigrationMovedOut, To: "host2"},
		{Context: "default", Current: true, Container: "worker", ID: "1a1b2c3d4e5f", Image: "busybox", State: "running",
			Status: "Up 2 hours", Migration: migrate.MigrationNone},
		{Context: "host2", Container: "db", ID: "2a1b2c3d4e5f", Image: "postgres:17", State: "running", Status: "Up 1 minute",
			Migration: migrate.MigrationMovedIn, From: "198.18.0.2:7450", Progress: "61% stalled", BytesCopied: 61, BytesTotal: 100,
			Error: "pgdata: connection refused"},
		{Context: "host2", Container: "web", ID: "3a1b2c3d4e5f", Image: "nginx:1.27", State: "running", Status: "Up 3 minutes",
			Migration: migrate.MigrationMovedIn, From: "198.18.0.1:7450", Progress: "complete", BytesCopied: 100, BytesTotal: 100},
		{Context: "host2", Container: "cache", ID: "4a1b2c3d4e5f", Image: "redis:7", State: "exited", Status: "Exited (0) 1 minute ago",
			Migration: migrate.MigrationInterrupted, To: "host3", Progress: "after volumes",
			Next: "finish: docker --context host2 migrate cache --to host3; undo: docker --context host2 migrate rollback cache"},
		{Context: "host3", State: migrate.StateUnreachable,
			Error: `cannot reach the engine of docker context "host3": context deadline exceeded`},
	}
}

func TestPrintContainersGolden(t *testing.T) {
	tests := []struct {
		name, format string
		rows         []migrate.ContainerRow
	}{
		{"ls", "", lsRows()},
		{"ls-empty", "table", nil},
		{"ls-template", "{{.Context}} {{.Container}} {{.Migration}} {{.Progress}}", lsRows()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printItems(&b, mustFormat(t, tt.format), tt.rows, printContainers); err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, b.Bytes())
		})
	}
}

// The table fits 80 columns; the notes under it may run longer.
func TestPrintContainersFits80Columns(t *testing.T) {
	var b bytes.Buffer
	if err := printItems(&b, mustFormat(t, ""), lsRows(), printContainers); err != nil {
		t.Fatal(err)
	}
	table, notes, _ := strings.Cut(b.String(), "\n\n")
	for _, l := range strings.Split(table, "\n") {
		if n := len([]rune(strings.TrimRight(l, " "))); n > 80 {
			t.Errorf("a row of %d columns: %q", n, l)
		}
	}
	for _, want := range []string{`host3: cannot reach the engine of docker context "host3"`, "db on host2: pgdata: connection refused",
		"cache on host2: the move was interrupted after volumes; finish: docker --context host2 migrate cache --to host3"} {
		if !strings.Contains(notes, want) {
			t.Errorf("no note %q under the table:\n%s", want, b.String())
		}
	}
}

func TestPrintContainersJSON(t *testing.T) {
	for _, rows := range [][]migrate.ContainerRow{nil, lsRows()} {
		var b bytes.Buffer
		if err := printItems(&b, mustFormat(t, "json"), rows, printContainers); err != nil {
			t.Fatal(err)
		}
		// An object per line, as `docker ps --format json`: none for no rows.
		back := jsonLines[migrate.ContainerRow](t, b.Bytes())
		if !slices.Equal(back, rows) {
			t.Fatalf("got back  %+v\nwant %+v", back, rows)
		}
		// The context's name stays plain: the * is for tables only.
		if strings.Contains(b.String(), "*") {
			t.Errorf("current marker in json: %s", b.Bytes())
		}
	}
}

func TestPrintContainersJSONFields(t *testing.T) {
	var b bytes.Buffer
	if err := printItems(&b, mustFormat(t, "json"), lsRows()[2:3], printContainers); err != nil {
		t.Fatal(err)
	}
	back := jsonLines[map[string]any](t, b.Bytes())
	if len(back) != 1 {
		t.Fatalf("%d objects: %s", len(back), b.Bytes())
	}
	var keys []string
	for k := range back[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"bytes_copied", "bytes_total", "container", "context", "current", "error", "from", "id", "image", "migration", "progress", "state", "status"}
	if !slices.Equal(keys, want) {
		t.Fatalf("fields %v, want %v", keys, want)
	}
}

func TestPrintContainersBadFormat(t *testing.T) {
	// runLs parses the format before it asks any host, or prints anything.
	_, err := parseFormat("{{.Nope")
	if err == nil || !strings.Contains(err.Error(), "template parsing error") {
		t.Fatalf("err = %v", err)
	}
}

func TestMigrationText(t *testing.T) {
	tests := []struct {
		r    migrate.ContainerRow
		want string
	}{
		{migrate.ContainerRow{}, "-"},
		{migrate.ContainerRow{Migration: migrate.MigrationNone}, "-"},
		{migrate.ContainerRow{Migration: migrate.MigrationMovedOut, To: "host2"}, "to host2"},
		{migrate.ContainerRow{Migration: migrate.MigrationMovedOut, To: "host2", Progress: "copied"}, "to host2 (copied)"},
		{migrate.ContainerRow{Migration: migrate.MigrationMovedIn, From: "a:1", Progress: "complete, local"}, "from a:1 (complete, local)"},
		{migrate.ContainerRow{Migration: migrate.MigrationMovedIn, From: "198.18.0.1:7450, 198.18.0.3:7450", Progress: "4%"}, "from 198.18.0.1, 198.18.0.3 (4%)"},
		{migrate.ContainerRow{Migration: migrate.MigrationInterrupted, To: "host2", Progress: "after volumes"}, "interrupted (to host2)"},
	}
	for _, tt := range tests {
		if got := migrationText(tt.r); got != tt.want {
			t.Errorf("migrationText(%+v) = %q, want %q", tt.r, got, tt.want)
		}
	}
}
