package migrate

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseRecord(t *testing.T) {
	good, _ := json.Marshal(moveRecord{Container: "web", ContainerID: "abc", Phase: "volumes", Seq: 3})
	tests := []struct {
		name   string
		labels map[string]string
		ok     bool
	}{
		{"a record", map[string]string{recordDataLabel: string(good)}, true},
		{"no record label", map[string]string{}, false},
		{"not JSON", map[string]string{recordDataLabel: "{"}, false},
		{"no container", map[string]string{recordDataLabel: `{"container":"web"}`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := parseRecord(tt.labels)
			if ok != tt.ok || ok && (r.Seq != 3 || r.Phase != "volumes") {
				t.Fatalf("parseRecord = %+v, %v", r, ok)
			}
		})
	}
}

// A rollback that cannot ask the target refuses only once the container
// may have started there.
func TestMaybeRunning(t *testing.T) {
	tests := []struct {
		rec    moveRecord
		force  bool
		refuse bool
	}{
		{rec: moveRecord{Phase: "volumes"}},
		{rec: moveRecord{Phase: "create", Starting: true}, refuse: true},
		{rec: moveRecord{Phase: "create", Starting: true}, force: true},
		{rec: moveRecord{Phase: phaseStart}, refuse: true},
	}
	for _, tt := range tests {
		if err := maybeRunning(&tt.rec, tt.force, "down"); (err != nil) != tt.refuse {
			t.Errorf("%+v force=%v: %v", tt.rec, tt.force, err)
		}
	}
}

func TestLeftovers(t *testing.T) {
	rec := &moveRecord{Container: "web", Target: "host2", Phase: "create", TargetID: "id",
		Volumes: []string{"a", "b"}, Networks: []string{"front"}}
	got := strings.Join(leftovers(rec), "")
	for _, want := range []string{"`docker --context host2 rm -f web`", "`docker --context host2 volume rm -f a b`", "`docker --context host2 network rm front`"} {
		if !strings.Contains(got, want) {
			t.Errorf("leftovers lack %s: %s", want, got)
		}
	}
	if l := leftovers(&moveRecord{Phase: "stop"}); l != nil {
		t.Errorf("a move stopped before the target was touched leaves %v", l)
	}
}

func TestSetRecorded(t *testing.T) {
	rec := &moveRecord{Container: "web", Source: "host1", Target: "host2", Phase: "layer"}
	var r ContainerRow
	r.Migration = MigrationNone
	r.setRecorded(rec)
	if r.Migration != MigrationInterrupted || r.To != "host2" || r.Progress != "after layer" ||
		!strings.Contains(r.Next, "docker --context host1 migrate web --to host2") || !strings.Contains(r.Next, "docker --context host1 migrate rollback web") {
		t.Fatalf("row %+v", r)
	}
	rec.Phase = phaseStart
	r = ContainerRow{Migration: MigrationNone}
	r.setRecorded(rec)
	if r.Migration != MigrationMovedOut || r.To != "host2" || r.Next != "" {
		t.Fatalf("row of a finished move %+v", r)
	}
}
