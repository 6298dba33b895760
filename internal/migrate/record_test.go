package migrate

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
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

func TestCountEstablished(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F90 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000
`
	if n := countEstablished(strings.NewReader(tcp)); n != 2 {
		t.Fatalf("countEstablished = %d, want 2", n)
	}
}

func TestMissingFlags(t *testing.T) {
	if got := missingFlags("fpu sse2 avx2 avx512f", "fpu sse2 avx2"); strings.Join(got, " ") != "avx512f" {
		t.Fatalf("missing %v", got)
	}
	if got := missingFlags("fpu", "fpu sse2"); len(got) != 0 {
		t.Fatalf("missing %v", got)
	}
}

func TestCarryable(t *testing.T) {
	tests := []struct {
		name string
		ctr  container.InspectResponse
		want string // in the error; "" for none
	}{
		{"plain", container.InspectResponse{HostConfig: &container.HostConfig{NetworkMode: "bridge", IpcMode: "private"}, Config: &container.Config{}}, ""},
		{"privileged", container.InspectResponse{HostConfig: &container.HostConfig{Privileged: true}}, "--privileged"},
		{"host network", container.InspectResponse{HostConfig: &container.HostConfig{NetworkMode: "host"}, Config: &container.Config{}}, ""},
		{"host PID namespace", container.InspectResponse{HostConfig: &container.HostConfig{PidMode: "host"}}, "--pid host"},
		{"tty", container.InspectResponse{HostConfig: &container.HostConfig{}, Config: &container.Config{Tty: true}}, "terminal"},
		{"bind", container.InspectResponse{HostConfig: &container.HostConfig{}, Mounts: []container.MountPoint{{Type: mount.TypeBind, Destination: "/etc/x"}}}, "bind mount /etc/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := carryable(tt.ctr)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("carryable: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestEngineMajor(t *testing.T) {
	for v, want := range map[string]int{"20.10.24+dfsg1": 20, "28.5.2": 28, "": 0, "dev": 0} {
		if got := engineMajor(v); got != want {
			t.Errorf("engineMajor(%q) = %d, want %d", v, got, want)
		}
	}
}
