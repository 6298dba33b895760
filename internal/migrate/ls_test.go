package migrate

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/volume"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// rawStatus is a volume's Status as the engine API returns it.
type rawStatus struct {
	volume string
	status map[string]any
}

func TestSetMigration(t *testing.T) {
	copying := func(copied, total float64) map[string]any {
		return map[string]any{"state": "copying", "source": "198.18.0.1:7450", "bytes_copied": copied, "bytes_total": total}
	}
	tests := []struct {
		name string
		vols []rawStatus
		want ContainerRow
	}{
		{"no cargo volume", nil, ContainerRow{Migration: MigrationNone}},
		{"local volume", []rawStatus{{"data", map[string]any{"state": "local"}}}, ContainerRow{Migration: MigrationNone}},
		{"exporting", []rawStatus{{"data", map[string]any{"state": "exporting", "to": "host2", "export": "x"}}},
			ContainerRow{Migration: MigrationMovedOut, To: "host2"}},
		{"exporting wins over an old move-in", []rawStatus{
			{"a", map[string]any{"state": "exporting", "to": "host3"}},
			{"b", map[string]any{"state": "complete", "source": "198.18.0.1:7450"}},
		}, ContainerRow{Migration: MigrationMovedOut, To: "host3"}},
		{"copying sums bytes", []rawStatus{{"a", copying(100, 1000)}, {"b", copying(510, 0)}},
			ContainerRow{Migration: MigrationMovedIn, From: "198.18.0.1:7450", Progress: "61%", BytesCopied: 610, BytesTotal: 1000}},
		{"never 100% before complete", []rawStatus{{"a", copying(999, 1000)}},
			ContainerRow{Migration: MigrationMovedIn, From: "198.18.0.1:7450", Progress: "99%", BytesCopied: 999, BytesTotal: 1000}},
		{"unknown total", []rawStatus{{"a", copying(0, 0)}},
			ContainerRow{Migration: MigrationMovedIn, From: "198.18.0.1:7450", Progress: "0%"}},
		{"stalled", []rawStatus{{"a", map[string]any{"state": "stalled", "source": "s:1", "bytes_copied": 5.0, "bytes_total": 10.0, "error": "connection refused"}}},
			ContainerRow{Migration: MigrationMovedIn, From: "s:1", Progress: "50% stalled", BytesCopied: 5, BytesTotal: 10, Error: "a: connection refused"}},
		{"failed", []rawStatus{
			{"a", map[string]any{"state": "failed", "source": "s:1", "error": "disk full"}},
			{"b", map[string]any{"state": "complete", "source": "s:1"}},
		}, ContainerRow{Migration: MigrationMovedIn, From: "s:1", Progress: "failed", Error: "a: disk full"}},
		{"complete", []rawStatus{
			{"a", map[string]any{"state": "complete", "source": "s:1", "bytes_copied": 7.0, "bytes_total": 7.0}},
			{"b", map[string]any{"state": "complete", "source": "s:1"}},
			{"c", map[string]any{"state": "local"}},
		}, ContainerRow{Migration: MigrationMovedIn, From: "s:1", Progress: "complete", BytesCopied: 7, BytesTotal: 7}},
		{"one still copying", []rawStatus{
			{"a", map[string]any{"state": "complete", "source": "s:1", "bytes_copied": 7.0, "bytes_total": 7.0}},
			{"b", map[string]any{"state": "copying", "source": "s:1", "bytes_copied": 1.0, "bytes_total": 3.0}},
		}, ContainerRow{Migration: MigrationMovedIn, From: "s:1", Progress: "80%", BytesCopied: 8, BytesTotal: 10}},
		{"settled", []rawStatus{
			{"a", map[string]any{"state": "local", "settled": true, "source": "s:1"}},
			{"b", map[string]any{"state": "complete", "source": "s:1"}},
		}, ContainerRow{Migration: MigrationMovedIn, From: "s:1", Progress: "complete"}},
		{"all settled", []rawStatus{
			{"a", map[string]any{"state": "complete", "settled": true, "source": "s:1"}},
		}, ContainerRow{Migration: MigrationMovedIn, From: "s:1", Progress: "complete, local"}},
		{"two sources", []rawStatus{
			{"a", map[string]any{"state": "complete", "source": "s:1"}},
			{"b", map[string]any{"state": "complete", "source": "t:2"}},
		}, ContainerRow{Migration: MigrationMovedIn, From: "s:1, t:2", Progress: "complete"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var vols []namedStatus
			for _, v := range tt.vols {
				vols = append(vols, namedStatus{v.volume, volstatus.Parse(v.status)})
			}
			var got ContainerRow
			got.setMigration(vols)
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// lsFake serves one engine's containers and volume statuses. Calls it
// does not script panic.
type lsFake struct {
	client.APIClient
	pingErr, listErr error
	delay            time.Duration
	containers       []container.Summary
	volumes          map[string]map[string]any
	inspects         atomic.Int32
	closed           atomic.Bool
}

func (f *lsFake) Close() error {
	f.closed.Store(true)
	return nil
}

func (f *lsFake) Ping(ctx context.Context, _ client.PingOptions) (client.PingResult, error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return client.PingResult{}, ctx.Err()
	}
	return client.PingResult{}, f.pingErr
}

func (f *lsFake) ContainerList(_ context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error) {
	if !opts.All {
		return client.ContainerListResult{}, errors.New("stopped containers left out")
	}
	return client.ContainerListResult{Items: f.containers}, f.listErr
}

func (f *lsFake) VolumeInspect(_ context.Context, name string, _ client.VolumeInspectOptions) (client.VolumeInspectResult, error) {
	f.inspects.Add(1)
	st, ok := f.volumes[name]
	if !ok {
		return client.VolumeInspectResult{}, errors.New("no such volume")
	}
	return client.VolumeInspectResult{Volume: volume.Volume{Name: name, Status: st}}, nil
}

func lsContainer(name, image string, state container.ContainerState, status string, mounts ...container.MountPoint) container.Summary {
	return container.Summary{ID: name + "0123456789abcdef", Names: []string{"/" + name}, Image: image, State: state, Status: status, Mounts: mounts}
}

func lsVolume(name, driver string) container.MountPoint {
	return container.MountPoint{Type: mount.TypeVolume, Name: name, Driver: driver}
}

func (f *lsFake) VolumeList(context.Context, client.VolumeListOptions) (client.VolumeListResult, error) {
	var out []volume.Volume
	for name := range f.volumes {
		out = append(out, volume.Volume{Name: name, Driver: "cargo:latest"})
	}
	return client.VolumeListResult{Items: out}, nil
}

// The source side: a container whose volumes are exported shows where
// they went, local-driver volumes too, and after the copy too.
func TestListHostExports(t *testing.T) {
	f := &lsFake{
		containers: []container.Summary{
			lsContainer("web", "nginx", container.StateExited, "Exited (0)", lsVolume("cache", "local")),
			lsContainer("db", "postgres", container.StateExited, "Exited (0)", lsVolume("pg", "cargo:latest")),
		},
		volumes: map[string]map[string]any{
			"cache" + ExportSuffix: {"state": "exporting", "volume": "cache", "to": "host2"},
			"pg" + ExportSuffix:    {"state": "complete", "volume": "pg", "to": "host3"},
			"pg":                   {"state": "local"},
		},
	}
	rows, err := listHost(context.Background(), Engine{"host1", f})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r.Container] = r.Migration + " " + r.To + " " + r.Progress
	}
	if got["web"] != "moved out host2 " || got["db"] != "moved out host3 copied" {
		t.Errorf("rows %v", got)
	}
}

func TestListHost(t *testing.T) {
	f := &lsFake{
		containers: []container.Summary{
			lsContainer("web", "nginx", container.StateRunning, "Up 3 minutes", lsVolume("data", "cargo:latest"), lsVolume("logs", "local"),
				container.MountPoint{Type: mount.TypeBind, Source: "/etc", Destination: "/etc"}),
			lsContainer("web2", "nginx", container.StateRunning, "Up 1 minute", lsVolume("data", "cargo:latest")),
			lsContainer("db", "postgres", container.StateExited, "Exited (0) 2 hours ago", lsVolume("gone", "cargo")),
			{ID: "0123456789abcdef", Image: "busybox", State: container.StateCreated, Status: "Created"},
		},
		volumes: map[string]map[string]any{
			"data": {"state": "copying", "source": "s:1", "bytes_copied": 1.0, "bytes_total": 4.0},
		},
	}
	rows, err := listHost(context.Background(), Engine{"host2", f})
	if err != nil {
		t.Fatal(err)
	}
	want := []ContainerRow{
		{Context: "host2", Container: "web", ID: "web0123456789abcdef", Image: "nginx", State: "running", Status: "Up 3 minutes",
			Migration: MigrationMovedIn, From: "s:1", Progress: "25%", BytesCopied: 1, BytesTotal: 4},
		{Context: "host2", Container: "web2", ID: "web20123456789abcdef", Image: "nginx", State: "running", Status: "Up 1 minute",
			Migration: MigrationMovedIn, From: "s:1", Progress: "25%", BytesCopied: 1, BytesTotal: 4},
		{Context: "host2", Container: "db", ID: "db0123456789abcdef", Image: "postgres", State: "exited", Status: "Exited (0) 2 hours ago",
			Migration: MigrationNone, Error: "inspecting volume gone: no such volume"},
		{Context: "host2", Container: "0123456789ab", ID: "0123456789abcdef", Image: "busybox", State: "created", Status: "Created",
			Migration: MigrationNone},
	}
	if !slices.Equal(rows, want) {
		t.Fatalf("got  %+v\nwant %+v", rows, want)
	}
	if n := f.inspects.Load(); n != 2 {
		t.Errorf("%d volume inspections, want 2 (a shared volume once)", n)
	}
}

func TestListHostErrors(t *testing.T) {
	tests := []struct {
		name string
		f    *lsFake
		want string
	}{
		{"ping", &lsFake{pingErr: errors.New("connection refused")}, `cannot reach the engine of docker context "h": connection refused`},
		{"list", &lsFake{listErr: errors.New("permission denied")}, "listing containers on h: permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := listHost(context.Background(), Engine{"h", tt.f})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v, want %s", err, tt.want)
			}
		})
	}
}

func TestListHosts(t *testing.T) {
	up := func(names ...string) *lsFake {
		f := &lsFake{}
		for _, n := range names {
			f.containers = append(f.containers, lsContainer(n, "img", container.StateRunning, "Up"))
		}
		return f
	}
	engines := map[string]*lsFake{
		"b":    up("zeta", "alpha"),
		"a":    up("web"),
		"slow": {delay: time.Hour},
		"dead": {pingErr: errors.New("connection refused")},
	}
	contexts := &fakeContexts{current: "b", names: []string{"slow", "b", "bad", "dead", "a"}, engines: map[string]client.APIClient{}}
	for name, f := range engines {
		contexts.engines[name] = f
	}
	svc := NewService(contexts)
	start := time.Now()
	rows, err := svc.Ls(context.Background(), LsOptions{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s: the slow host was not cut off", d)
	}
	type got struct {
		ctx, ctr, state string
		current         bool
		failed          bool
	}
	var gots []got
	for _, r := range rows {
		gots = append(gots, got{r.Context, r.Container, r.State, r.Current, r.Error != ""})
	}
	want := []got{
		{"a", "web", "running", false, false},
		{"b", "alpha", "running", true, false},
		{"b", "zeta", "running", true, false},
		{"bad", "", StateUnreachable, false, true},
		{"dead", "", StateUnreachable, false, true},
		{"slow", "", StateUnreachable, false, true},
	}
	if !slices.Equal(gots, want) {
		t.Fatalf("got  %+v\nwant %+v", gots, want)
	}
	if rows[5].Error != `cannot reach the engine of docker context "slow": context deadline exceeded` {
		t.Errorf("slow host: %q", rows[5].Error)
	}
	for name, f := range engines {
		if !f.closed.Load() {
			t.Errorf("the client of %s was left open", name)
		}
	}
}

func TestListHostsNone(t *testing.T) {
	// JSON output is [] rather than null when there is nothing to list.
	if rows := listHosts(context.Background(), nil, "", nil, time.Second); rows == nil || len(rows) != 0 {
		t.Fatalf("%#v", rows)
	}
}
