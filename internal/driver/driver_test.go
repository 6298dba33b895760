package driver

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/state"
)

// fakeMounter models the mount table as a stack count per target. It is
// safe for concurrent use; tests that read stack directly do so while
// nothing else runs.
type fakeMounter struct {
	mu      sync.Mutex
	stack   map[string]int
	bindErr error
	binds   int
	// unmountHook, if set, runs before each unmount, outside mu: a test
	// makes an unmount slow with it.
	unmountHook func(target string)
	// overlays holds, by target, the overlays mounted; a test adds one a
	// previous process left.
	overlays map[string]fakeOverlay
}

type fakeOverlay struct{ lower, upper string }

func newFakeMounter() *fakeMounter {
	return &fakeMounter{stack: map[string]int{}, overlays: map[string]fakeOverlay{}}
}

func (f *fakeMounter) Bind(_, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bindErr != nil {
		return f.bindErr
	}
	if _, err := os.Stat(target); err != nil {
		return err
	}
	f.binds++
	f.stack[target]++
	return nil
}

func (f *fakeMounter) Unmount(target string) error {
	f.mu.Lock()
	hook := f.unmountHook
	f.mu.Unlock()
	if hook != nil {
		hook(target)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stack[target] > 0 {
		f.stack[target]--
	}
	if f.stack[target] == 0 {
		delete(f.overlays, target)
	}
	return nil
}

func (f *fakeMounter) Mounts(target string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stack[target], nil
}

func (f *fakeMounter) Overlay(lower, upper, _, target string) error {
	if err := f.Bind("", target); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.overlays[target] = fakeOverlay{lower: lower, upper: upper}
	return nil
}

func (f *fakeMounter) Overlays(upper string) ([]Overlay, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Overlay
	for target, o := range f.overlays {
		if o.upper == upper {
			out = append(out, Overlay{Target: target, Lower: o.lower})
		}
	}
	return out, nil
}

type fixture struct {
	root, mountDir string
	mnt            *fakeMounter
	d              *Driver
	// cfg, if set, adds to the driver's Config at each restart.
	cfg func(*Config)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{root: t.TempDir(), mnt: newFakeMounter()}
	f.mountDir = filepath.Join(f.root, "mnt")
	f.restart(t)
	return f
}

// restart builds a new driver on the same disk and mount table, as a
// plugin restart does.
func (f *fixture) restart(t *testing.T) {
	t.Helper()
	store, err := state.Open(filepath.Join(f.root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: store, MountDir: f.mountDir, RunDir: filepath.Join(f.root, "run"), Mounter: f.mnt,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if f.cfg != nil {
		f.cfg(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.d = d
	f.waitRecovered(t)
}

// waitRecovered waits for the driver's background recovery.
func (f *fixture) waitRecovered(t *testing.T) {
	t.Helper()
	select {
	case <-f.d.Recovered():
	case <-time.After(10 * time.Second):
		t.Fatal("the driver did not recover its volumes within 10s")
	}
}

func (f *fixture) mp(name string) string { return filepath.Join(f.mountDir, name) }

func mustCreate(t *testing.T, d *Driver, name string, opts map[string]string) {
	t.Helper()
	if err := d.Create(&volume.CreateRequest{Name: name, Options: opts}); err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
}

type createCase struct {
	name     string
	vol      string
	opts     map[string]string
	wantErr  string
	wantMode os.FileMode
	wantUID  int
}

func TestCreate(t *testing.T) {
	tests := []createCase{
		{name: "plain", vol: "data", wantMode: 0o755},
		{name: "mode", vol: "shared", opts: map[string]string{"mode": "0770"}, wantMode: 0o770},
		{name: "sticky", vol: "tmpish", opts: map[string]string{"mode": "1777"}, wantMode: 0o777 | os.ModeSticky},
		{name: "slash", vol: "a/b", wantErr: "invalid volume name"},
		{name: "dotdot", vol: "..", wantErr: "invalid volume name"},
		{name: "unknown option", vol: "x1", opts: map[string]string{"size": "1G"}, wantErr: `unknown option "size" (valid options: gid, mode, uid)`},
		{name: "bad uid", vol: "x2", opts: map[string]string{"uid": "bob"}, wantErr: "numeric id"},
		{name: "bad mode", vol: "x3", opts: map[string]string{"mode": "999"}, wantErr: "octal"},
		{name: "mode too big", vol: "x4", opts: map[string]string{"mode": "17777"}, wantErr: "octal"},
	}
	if os.Getuid() == 0 { // only root can give a directory away
		tests = append(tests, createCase{name: "owner", vol: "owned", opts: map[string]string{"uid": "1000", "gid": "1000", "mode": "0700"}, wantMode: 0o700, wantUID: 1000})
	}
	f := newFixture(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.d.Create(&volume.CreateRequest{Name: tt.vol, Options: tt.opts})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				if _, err := f.d.Get(&volume.GetRequest{Name: tt.vol}); err == nil {
					t.Fatalf("a failed create left volume %q behind", tt.vol)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(f.d.store.DataDir(tt.vol))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode() & (os.ModePerm | os.ModeSticky | os.ModeSetuid | os.ModeSetgid); got != tt.wantMode {
				t.Errorf("mode = %v, want %v", got, tt.wantMode)
			}
			if tt.wantUID != 0 {
				if got := int(statUID(t, fi)); got != tt.wantUID {
					t.Errorf("uid = %d, want %d", got, tt.wantUID)
				}
			}
			g, err := f.d.Get(&volume.GetRequest{Name: tt.vol})
			if err != nil {
				t.Fatal(err)
			}
			if g.Volume.Status["state"] != "local" || g.Volume.Mountpoint != f.mp(tt.vol) || g.Volume.CreatedAt == "" {
				t.Errorf("Get = %+v", g.Volume)
			}
		})
	}
}

func TestCreateIsIdempotent(t *testing.T) {
	f := newFixture(t)
	mustCreate(t, f.d, "data", map[string]string{"mode": "0700"})
	if err := os.WriteFile(filepath.Join(f.d.store.DataDir("data"), "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, f.d, "data", map[string]string{"mode": "0700"}) // same options
	mustCreate(t, f.d, "data", nil)                               // engine re-creating by name
	err := f.d.Create(&volume.CreateRequest{Name: "data", Options: map[string]string{"mode": "0755"}})
	if err == nil || !strings.Contains(err.Error(), "already exists with options mode=0700") {
		t.Fatalf("conflicting create: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.d.store.DataDir("data"), "keep")); err != nil {
		t.Fatalf("re-create lost data: %v", err)
	}
}

func TestMountRefCounting(t *testing.T) {
	f := newFixture(t)
	mustCreate(t, f.d, "data", nil)
	type step struct {
		op        string // mount, unmount, remove
		id        string
		wantErr   string
		wantStack int
		wantRefs  int
	}
	steps := []step{
		{op: "mount", id: "c1", wantStack: 1, wantRefs: 1},
		{op: "mount", id: "c2", wantStack: 1, wantRefs: 2},
		{op: "mount", id: "c2", wantStack: 1, wantRefs: 2}, // repeated ID
		{op: "remove", wantErr: "in use (2 mount(s))", wantStack: 1, wantRefs: 2},
		{op: "unmount", id: "c1", wantStack: 1, wantRefs: 1},
		{op: "unmount", id: "unknown", wantStack: 1, wantRefs: 1},
		{op: "unmount", id: "c2", wantStack: 0, wantRefs: 0},
		{op: "unmount", id: "c2", wantStack: 0, wantRefs: 0}, // repeated after restart
		{op: "mount", id: "c3", wantStack: 1, wantRefs: 1},
	}
	for i, s := range steps {
		var err error
		switch s.op {
		case "mount":
			var r *volume.MountResponse
			r, err = f.d.Mount(&volume.MountRequest{Name: "data", ID: s.id})
			if err == nil && r.Mountpoint != f.mp("data") {
				t.Fatalf("step %d: mountpoint %q", i, r.Mountpoint)
			}
		case "unmount":
			err = f.d.Unmount(&volume.UnmountRequest{Name: "data", ID: s.id})
		case "remove":
			err = f.d.Remove(&volume.RemoveRequest{Name: "data"})
		}
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Fatalf("step %d %s: err = %v, want %q", i, s.op, err, s.wantErr)
			}
		} else if err != nil {
			t.Fatalf("step %d %s: %v", i, s.op, err)
		}
		if got := f.mnt.stack[f.mp("data")]; got != s.wantStack {
			t.Fatalf("step %d %s %s: %d mounts, want %d", i, s.op, s.id, got, s.wantStack)
		}
		// What is on disk must match: reload and compare.
		f.restart(t)
		if got := len(f.d.vols["data"].Mounts); got != s.wantRefs {
			t.Fatalf("step %d %s %s: %d persisted refs, want %d", i, s.op, s.id, got, s.wantRefs)
		}
	}
	if f.mnt.binds != 2 {
		t.Errorf("bound %d times, want 2 (one per first reference)", f.mnt.binds)
	}
}

func TestMountFailureLeavesNoReference(t *testing.T) {
	f := newFixture(t)
	mustCreate(t, f.d, "data", nil)
	f.mnt.bindErr = errors.New("boom")
	if _, err := f.d.Mount(&volume.MountRequest{Name: "data", ID: "c1"}); err == nil {
		t.Fatal("mount succeeded")
	}
	f.mnt.bindErr = nil
	f.restart(t)
	if n := len(f.d.vols["data"].Mounts); n != 0 {
		t.Fatalf("%d references after a failed mount", n)
	}
	if err := f.d.Remove(&volume.RemoveRequest{Name: "data"}); err != nil {
		t.Fatalf("volume stuck after failed mount: %v", err)
	}
}

func TestReconcileAtStart(t *testing.T) {
	tests := []struct {
		name       string
		refs       bool // the volume holds a mount reference
		stackAfter int  // mounts at the mountpoint when the plugin restarts
		want       int
	}{
		{"engine restart unmounted a held volume", true, 0, 1},
		{"held and mounted once", true, 1, 1},
		{"mounted but nobody holds it", false, 1, 0},
		{"stacked and nobody holds it", false, 3, 0},
		{"idle", false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			mustCreate(t, f.d, "data", nil)
			if tt.refs {
				if _, err := f.d.Mount(&volume.MountRequest{Name: "data", ID: "c1"}); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(f.mp("data"), 0o755); err != nil {
				t.Fatal(err)
			}
			f.mnt.stack[f.mp("data")] = tt.stackAfter
			f.restart(t)
			if got := f.mnt.stack[f.mp("data")]; got != tt.want {
				t.Fatalf("%d mounts after restart, want %d", got, tt.want)
			}
		})
	}
}

func TestReconcileRemovesStaleMountpoints(t *testing.T) {
	f := newFixture(t)
	stale := f.mp("gone")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	f.mnt.stack[stale] = 1
	f.restart(t)
	if f.mnt.stack[stale] != 0 {
		t.Fatal("stale mount left mounted")
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale mountpoint left: %v", err)
	}
}

func TestRemoveDeletesData(t *testing.T) {
	f := newFixture(t)
	mustCreate(t, f.d, "data", nil)
	if err := f.d.Remove(&volume.RemoveRequest{Name: "data"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.d.store.Dir("data")); !os.IsNotExist(err) {
		t.Fatalf("data left behind: %v", err)
	}
	for _, err := range []error{
		f.d.Remove(&volume.RemoveRequest{Name: "data"}),
		f.d.Unmount(&volume.UnmountRequest{Name: "data", ID: "x"}),
	} {
		if err == nil || !strings.Contains(err.Error(), "no such volume") {
			t.Errorf("err = %v, want no such volume", err)
		}
	}
	if _, err := f.d.Get(&volume.GetRequest{Name: "data"}); err == nil {
		t.Error("Get of removed volume succeeded")
	}
	l, _ := f.d.List()
	if len(l.Volumes) != 0 {
		t.Errorf("List = %v", l.Volumes)
	}
}

func TestListSorted(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"zeta", "alpha", "mid"} {
		mustCreate(t, f.d, n, nil)
	}
	l, err := f.d.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range l.Volumes {
		got = append(got, v.Name)
	}
	if strings.Join(got, ",") != "alpha,mid,zeta" {
		t.Fatalf("List = %v", got)
	}
	if c := f.d.Capabilities(); c.Capabilities.Scope != "local" {
		t.Fatalf("scope %q", c.Capabilities.Scope)
	}
}
