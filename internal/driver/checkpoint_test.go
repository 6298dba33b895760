package driver

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/state"
)

const (
	srcCtr = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
	dstCtr = "f9e8d7c6b5a4938271605f4e3d2c1b0af9e8d7c6b5a4938271605f4e3d2c1b0a"
)

func TestCheckpointOptions(t *testing.T) {
	ticket := "cargo://e1:" + strings.Repeat("A", 43) + "@192.0.2.1:7450?fp=sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		opts    map[string]string
		want    state.Kind
		wantErr string
	}{
		{"export", map[string]string{"checkpoint": srcCtr + "/cp1"}, kindCheckpointExport, ""},
		{"export with to", map[string]string{"checkpoint": srcCtr + "/cp1", "to": "h2"}, kindCheckpointExport, ""},
		{"fetch", map[string]string{"checkpoint-from": ticket, "container": dstCtr, "checkpoint-name": "cp1"}, kindCheckpoint, ""},
		{"fetch without container", map[string]string{"checkpoint-from": ticket, "checkpoint-name": "cp1"}, "", "needs container="},
		{"fetch without name", map[string]string{"checkpoint-from": ticket, "container": dstCtr}, "", "needs checkpoint-name="},
		{"both", map[string]string{"checkpoint": srcCtr + "/cp1", "checkpoint-from": ticket}, "", "exclude each other"},
		{"with export", map[string]string{"checkpoint": srcCtr + "/cp1", "export": "v"}, "", "options export and checkpoint exclude"},
		{"with from", map[string]string{"checkpoint-from": ticket, "from": ticket}, "", "options from and checkpoint-from exclude"},
		{"export with a volume option", map[string]string{"checkpoint": srcCtr + "/cp1", "uid": "0"}, "", `unknown option "uid"`},
		{"fetch with to", map[string]string{"checkpoint-from": ticket, "container": dstCtr, "checkpoint-name": "cp1", "to": "x"}, "", `unknown option "to"`},
		{"neither", map[string]string{"container": dstCtr}, state.KindLocal, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kindOf(tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("kindOf = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("kindOf = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// Only ID/checkpoints/NAME can ever be named: everything that could reach
// elsewhere is refused before any path is made.
func TestCheckpointRefValidation(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // "" when valid
	}{
		{srcCtr + "/cp1", ""},
		{srcCtr + "/a", ""},
		{srcCtr + "/Live.2026-11_23", ""},
		{srcCtr + "/" + strings.Repeat("n", maxCheckpointName), ""},
		{srcCtr + "/" + strings.Repeat("n", maxCheckpointName+1), "checkpoint name"},
		{srcCtr, "want CONTAINER-ID/CHECKPOINT-NAME"},
		{srcCtr[:12] + "/cp1", "full ID"},
		{strings.ToUpper(srcCtr) + "/cp1", "full ID"},
		{srcCtr + "0/cp1", "full ID"},
		{"../" + srcCtr[3:] + "/cp1", "full ID"},
		{"/" + srcCtr[1:] + "/cp1", "full ID"},
		{srcCtr + "/", "checkpoint name"},
		{srcCtr + "/..", "checkpoint name"},
		{srcCtr + "/.", "checkpoint name"},
		{srcCtr + "/.hidden", "checkpoint name"},
		{srcCtr + "/-flag", "checkpoint name"},
		{srcCtr + "/../../etc", "checkpoint name"},
		{srcCtr + "/a/b", "checkpoint name"},
		{srcCtr + "/a\x00b", "checkpoint name"},
		{srcCtr + "/a b", "checkpoint name"},
		{srcCtr + "/ä", "checkpoint name"},
		{srcCtr + "/a\n", "checkpoint name"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			ref, err := parseCheckpointRef(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if ref.path() != ref.Container+"/checkpoints/"+ref.Name || filepath.Clean(ref.path()) != ref.path() {
					t.Fatalf("path %q", ref.path())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

// checkpointFixture is one plugin whose peer service really listens, so
// that it can export a checkpoint and fetch it back into another container
// of the same containers directory.
type checkpointFixture struct {
	*fixture
	containers string
	reg        *export.Registry
}

func newCheckpointFixture(t *testing.T) *checkpointFixture {
	t.Helper()
	id, err := peer.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := export.NewRegistry()
	srv := peer.NewServer(reg, id, peer.ServerOptions{}, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	f := &checkpointFixture{fixture: newFixture(t), reg: reg}
	f.containers = filepath.Join(f.root, "containers")
	ckMkdir(t, f.containers, 0o710)
	f.cfg = func(c *Config) {
		c.Exports, c.Advertise, c.Fingerprint = reg, l.Addr().String(), id.Fingerprint()
		c.EngineContainers = f.containers
	}
	f.restart(t)
	t.Cleanup(f.d.Close)
	return f
}

// checkpoint writes a checkpoint of container id as the engine would,
// files of several sizes, one over the size from which files travel in
// chunks, and returns what it wrote by path.
func (f *checkpointFixture) checkpoint(t *testing.T, id, name string) map[string][]byte {
	t.Helper()
	dir := filepath.Join(f.containers, id, "checkpoints", name)
	ckMkdir(t, dir, 0o700)
	ckMkdir(t, filepath.Join(dir, "sub"), 0o755)
	files := map[string][]byte{
		"config.json":      []byte(`{"Name":"` + name + `"}`),
		"descriptors.json": nil,
		"pages-1.img":      random(t, 9<<20+123),
		"core-1.img":       random(t, 70_000),
		"sub/inventory":    random(t, 10),
	}
	for p, b := range files {
		mode := os.FileMode(0o600)
		if p == "config.json" {
			mode = 0o644
		}
		if err := os.WriteFile(filepath.Join(dir, p), b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// exportCheckpoint opens the export of id's checkpoint and returns the
// export volume's Status.
func (f *checkpointFixture) exportCheckpoint(t *testing.T, ctrl, id, name string) map[string]any {
	t.Helper()
	mustCreate(t, f.d, ctrl, map[string]string{"checkpoint": id + "/" + name, "to": "h2"})
	return checkpointStatus(t, f.d, ctrl)
}

// fetch creates the fetch's volume and waits for the background copy, as
// a live move does: a fetch that fails is removed, as a move removes it,
// and its error returned.
func (f *checkpointFixture) fetch(ticket, vol, id, name string) error {
	err := f.d.Create(&volume.CreateRequest{Name: vol, Options: map[string]string{
		"checkpoint-from": ticket, "container": id, "checkpoint-name": name,
	}})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := f.d.Get(&volume.GetRequest{Name: vol})
		if err != nil {
			return err
		}
		switch st := res.Volume.Status; st["state"] {
		case "complete":
			return nil
		case "failed":
			if err := f.d.Remove(&volume.RemoveRequest{Name: vol}); err != nil {
				return err
			}
			return fmt.Errorf("%v", st["error"])
		case "copying":
		default:
			return fmt.Errorf("fetch in state %v", st["state"])
		}
		if time.Now().After(deadline) {
			return errors.New("the fetch did not end within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// exportTold waits until the target has told the checkpoint export ctrl
// that it holds the checkpoint (just after its own record says so), and
// returns the export's Status.
func exportTold(t *testing.T, d *Driver, ctrl string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := checkpointStatus(t, d, ctrl)
		if st["state"] != "exporting" || time.Now().After(deadline) {
			return st
		}
		time.Sleep(time.Millisecond)
	}
}

func checkpointStatus(t *testing.T, d *Driver, name string) map[string]any {
	t.Helper()
	g, err := d.Get(&volume.GetRequest{Name: name})
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return g.Volume.Status
}

// entries lists dir's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// sameCheckpoint compares the tree at dir with what was written, byte for
// byte, with modes.
func sameCheckpoint(t *testing.T, dir, srcDir string, want map[string][]byte) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		src, err := os.Lstat(filepath.Join(srcDir, rel))
		if err != nil {
			return fmt.Errorf("%s is not in the source: %w", rel, err)
		}
		got, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if got.Mode() != src.Mode() {
			return fmt.Errorf("%s: mode %v, the source's %v", rel, got.Mode(), src.Mode())
		}
		if e.Type().IsRegular() {
			n++
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if !bytes.Equal(b, want[rel]) {
				return fmt.Errorf("%s: %d bytes differ from the %d written", rel, len(b), len(want[rel]))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Fatalf("%d files fetched, %d written", n, len(want))
	}
}

// A checkpoint exported by one container's directory arrives whole in
// another's, and each volume's Status says so.
func TestCheckpointTravels(t *testing.T) {
	f := newCheckpointFixture(t)
	want := f.checkpoint(t, srcCtr, "cp1")
	ckMkdir(t, filepath.Join(f.containers, dstCtr), 0o710)

	st := f.exportCheckpoint(t, "cp1.src", srcCtr, "cp1")
	var wantBytes int64
	for _, b := range want {
		wantBytes += int64(len(b))
	}
	if st["state"] != "exporting" || st["container"] != srcCtr || st["checkpoint"] != "cp1" || st["to"] != "h2" ||
		st["files_total"] != len(want) || st["bytes_total"] != wantBytes || st["export_id"] == "" {
		t.Fatalf("status of the export: %v", st)
	}
	ticket, _ := st["ticket"].(string)
	if _, err := peer.ParseTicket(ticket); err != nil {
		t.Fatalf("the export's ticket: %v", err)
	}
	if err := f.fetch(ticket, "cp1.dst", dstCtr, "cp1"); err != nil {
		t.Fatal(err)
	}
	cps := filepath.Join(f.containers, dstCtr, "checkpoints")
	sameCheckpoint(t, filepath.Join(cps, "cp1"), filepath.Join(f.containers, srcCtr, "checkpoints", "cp1"), want)
	if got := entries(t, cps); !slices.Equal(got, []string{"cp1"}) {
		t.Fatalf("the checkpoints directory holds %v", got)
	}
	if fi, err := os.Stat(cps); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the checkpoints directory made for the container: %v, %v", fi.Mode(), err)
	}

	st = checkpointStatus(t, f.d, "cp1.dst")
	if st["state"] != "complete" || st["container"] != dstCtr || st["checkpoint"] != "cp1" ||
		st["files_total"] != len(want) || st["bytes_total"] != wantBytes || st["started_at"] == "" || st["completed_at"] == "" {
		t.Fatalf("status of the fetch: %v", st)
	}
	if ms, ok := st["duration_ms"].(int64); !ok || ms < 0 {
		t.Fatalf("duration_ms = %#v", st["duration_ms"])
	}
	// The target told the source: its export closed, the credential died.
	st = exportTold(t, f.d, "cp1.src")
	if st["state"] != "complete" || st["report"] != fmt.Sprintf("%d files, %d bytes", len(want), wantBytes) {
		t.Fatalf("status of the export after the fetch: %v", st)
	}
	if _, ok := f.reg.Lookup(st["export_id"].(string)); ok {
		t.Fatal("the export is still served after the target reported")
	}

	for _, vol := range []string{"cp1.src", "cp1.dst"} {
		if _, err := f.d.Mount(&volume.MountRequest{Name: vol, ID: "m1"}); err == nil || !strings.Contains(err.Error(), "holds no data") {
			t.Fatalf("Mount(%s) = %v, want refused", vol, err)
		}
	}
	// Removing either volume deletes nothing of either checkpoint: the
	// engine restores from one and the move deletes both through it.
	for _, vol := range []string{"cp1.src", "cp1.dst"} {
		if err := f.d.Remove(&volume.RemoveRequest{Name: vol}); err != nil {
			t.Fatal(err)
		}
	}
	sameCheckpoint(t, filepath.Join(cps, "cp1"), filepath.Join(f.containers, srcCtr, "checkpoints", "cp1"), want)
}

// A checkpoint export the target has not fetched yet is served again
// after the source plugin restarts, under the same ticket: a live move
// whose source plugin restarted during its transfer goes on.
func TestCheckpointExportServedAfterRestart(t *testing.T) {
	f := newCheckpointFixture(t)
	want := f.checkpoint(t, srcCtr, "cp1")
	ckMkdir(t, filepath.Join(f.containers, dstCtr), 0o710)
	st := f.exportCheckpoint(t, "cp1.src", srcCtr, "cp1")
	ticket, _ := st["ticket"].(string)

	f.d.Close() // the old process's exports leave the registry with it
	if _, ok := f.reg.Lookup(st["export_id"].(string)); ok {
		t.Fatal("the export outlived its driver")
	}
	f.restart(t)
	select {
	case <-f.d.ExportsServed():
	case <-time.After(10 * time.Second):
		t.Fatal("the checkpoint export is not served again")
	}
	if st := checkpointStatus(t, f.d, "cp1.src"); st["state"] != "exporting" || st["error"] != nil {
		t.Fatalf("status of the export after the restart: %v", st)
	}
	if err := f.fetch(ticket, "cp1.dst", dstCtr, "cp1"); err != nil {
		t.Fatalf("fetching after the source restarted: %v", err)
	}
	sameCheckpoint(t, filepath.Join(f.containers, dstCtr, "checkpoints", "cp1"), filepath.Join(f.containers, srcCtr, "checkpoints", "cp1"), want)
	if st := exportTold(t, f.d, "cp1.src"); st["state"] != "complete" {
		t.Fatalf("status of the export after the fetch: %v", st)
	}

	// An export whose checkpoint went while the plugin was down is
	// quarantined, and only it.
	f.exportCheckpoint(t, "cp2.src", srcCtr, "cp1")
	f.d.Close()
	ckMust(t, os.RemoveAll(filepath.Join(f.containers, srcCtr, "checkpoints", "cp1")))
	f.restart(t)
	if st := checkpointStatus(t, f.d, "cp2.src"); st["state"] != "failed" || !strings.Contains(fmt.Sprint(st["error"]), "serving the checkpoint again") {
		t.Fatalf("status of an export whose checkpoint is gone: %v", st)
	}
	ckMust(t, f.d.Remove(&volume.RemoveRequest{Name: "cp2.src"}))
}

// Removing the export volume closes the export: its ticket no longer
// fetches anything, and the checkpoint stays on the source.
func TestCheckpointExportRemoved(t *testing.T) {
	f := newCheckpointFixture(t)
	f.checkpoint(t, srcCtr, "cp1")
	ckMkdir(t, filepath.Join(f.containers, dstCtr, "checkpoints"), 0o700)
	st := f.exportCheckpoint(t, "cp1.src", srcCtr, "cp1")
	if err := f.d.Remove(&volume.RemoveRequest{Name: "cp1.src"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.reg.Lookup(st["export_id"].(string)); ok {
		t.Fatal("the export is still served after its volume was removed")
	}
	err := f.fetch(st["ticket"].(string), "cp1.dst", dstCtr, "cp1")
	if err == nil || !strings.Contains(err.Error(), "credential") {
		t.Fatalf("fetch with the closed export's ticket: %v", err)
	}
	if got := entries(t, filepath.Join(f.containers, dstCtr, "checkpoints")); len(got) != 0 {
		t.Fatalf("a refused fetch left %v", got)
	}
	if _, err := os.Stat(filepath.Join(f.containers, srcCtr, "checkpoints", "cp1", "pages-1.img")); err != nil {
		t.Fatalf("removing the export touched the checkpoint: %v", err)
	}
}

// The source refuses what is not a checkpoint directory of its own.
func TestCheckpointExportRefused(t *testing.T) {
	f := newCheckpointFixture(t)
	elsewhere := t.TempDir()
	ckMkdir(t, filepath.Join(elsewhere, "cp1"), 0o700)
	tests := []struct {
		name    string
		setup   func(t *testing.T)
		spec    string
		wantErr string
	}{
		{"no such checkpoint", func(*testing.T) {}, srcCtr + "/none", "has no " + srcCtr + "/checkpoints/none"},
		{"a hostile name", func(*testing.T) {}, srcCtr + "/../../etc", "checkpoint name"},
		{"a short ID", func(*testing.T) {}, srcCtr[:12] + "/cp1", "full ID"},
		{"the checkpoint is a symlink", func(t *testing.T) {
			ckMkdir(t, filepath.Join(f.containers, srcCtr, "checkpoints"), 0o700)
			ckMust(t, os.Symlink(filepath.Join(elsewhere, "cp1"), filepath.Join(f.containers, srcCtr, "checkpoints", "link")))
		}, srcCtr + "/link", "symlink"},
		{"the container is a symlink", func(t *testing.T) {
			ckMkdir(t, filepath.Join(elsewhere, "checkpoints", "cp1"), 0o700)
			ckMust(t, os.Symlink(elsewhere, filepath.Join(f.containers, dstCtr)))
		}, dstCtr + "/cp1", "symlink"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup(t)
			vol := fmt.Sprintf("x%d", i)
			err := f.d.Create(&volume.CreateRequest{Name: vol, Options: map[string]string{"checkpoint": tt.spec}})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
			if _, err := f.d.Get(&volume.GetRequest{Name: vol}); err == nil {
				t.Fatal("a refused export left its volume")
			}
		})
	}
}

// Where a fetch places its checkpoint, and that one which fails leaves
// nothing there, whatever the target's containers directory holds.
func TestCheckpointPlacement(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares the source's checkpoint cp1 and the target
		// container's directory; it returns where the target's
		// checkpoints directory is (or would be).
		setup   func(t *testing.T, f *checkpointFixture) string
		wantErr string
		// want lists the checkpoints directory afterwards.
		want []string
	}{
		{
			name: "the container has no checkpoints directory yet",
			setup: func(t *testing.T, f *checkpointFixture) string {
				ckMkdir(t, filepath.Join(f.containers, dstCtr), 0o710)
				return filepath.Join(f.containers, dstCtr, "checkpoints")
			},
			want: []string{"cp1"},
		},
		{
			name: "other checkpoints stay",
			setup: func(t *testing.T, f *checkpointFixture) string {
				ckMkdir(t, filepath.Join(f.containers, dstCtr, "checkpoints", "older"), 0o700)
				return filepath.Join(f.containers, dstCtr, "checkpoints")
			},
			want: []string{"cp1", "older"},
		},
		{
			name: "what an interrupted fetch left is replaced",
			setup: func(t *testing.T, f *checkpointFixture) string {
				cps := filepath.Join(f.containers, dstCtr, "checkpoints")
				ckMkdir(t, filepath.Join(cps, fetchPrefix+"cp1", "data"), 0o700)
				ckMust(t, os.WriteFile(filepath.Join(cps, fetchPrefix+"cp1", "data", "stale"), []byte("x"), 0o600))
				return cps
			},
			want: []string{"cp1"},
		},
		{
			name: "the name is taken",
			setup: func(t *testing.T, f *checkpointFixture) string {
				cps := filepath.Join(f.containers, dstCtr, "checkpoints")
				ckMkdir(t, filepath.Join(cps, "cp1"), 0o700)
				return cps
			},
			wantErr: `already has a checkpoint named "cp1"`,
			want:    []string{"cp1"},
		},
		{
			name: "an empty file has the name",
			setup: func(t *testing.T, f *checkpointFixture) string {
				cps := filepath.Join(f.containers, dstCtr, "checkpoints")
				ckMkdir(t, cps, 0o700)
				ckMust(t, os.WriteFile(filepath.Join(cps, "cp1"), nil, 0o600))
				return cps
			},
			wantErr: `already has a checkpoint named "cp1"`,
			want:    []string{"cp1"},
		},
		{
			name: "no such container",
			setup: func(_ *testing.T, f *checkpointFixture) string {
				return filepath.Join(f.containers, dstCtr, "checkpoints")
			},
			wantErr: "the engine has no container " + dstCtr,
		},
		{
			name: "the container is a symlink out",
			setup: func(t *testing.T, f *checkpointFixture) string {
				out := t.TempDir()
				ckMust(t, os.Symlink(out, filepath.Join(f.containers, dstCtr)))
				return filepath.Join(out, "checkpoints")
			},
			wantErr: "symlink",
		},
		{
			name: "the checkpoints directory is a symlink out",
			setup: func(t *testing.T, f *checkpointFixture) string {
				out := t.TempDir()
				ckMkdir(t, filepath.Join(f.containers, dstCtr), 0o710)
				ckMust(t, os.Symlink(out, filepath.Join(f.containers, dstCtr, "checkpoints")))
				return out
			},
			wantErr: "symlink",
			want:    []string{},
		},
		{
			name: "the source's checkpoint holds a symlink",
			setup: func(t *testing.T, f *checkpointFixture) string {
				ckMust(t, os.Symlink("/etc/passwd", filepath.Join(f.containers, srcCtr, "checkpoints", "cp1", "passwd")))
				ckMkdir(t, filepath.Join(f.containers, dstCtr), 0o710)
				return filepath.Join(f.containers, dstCtr, "checkpoints")
			},
			wantErr: `holds "passwd", a symlink: refused`,
		},
		{
			name: "the source's checkpoint holds a setuid file",
			setup: func(t *testing.T, f *checkpointFixture) string {
				p := filepath.Join(f.containers, srcCtr, "checkpoints", "cp1", "core-1.img")
				ckMust(t, os.Chmod(p, 0o755|os.ModeSetuid))
				ckMkdir(t, filepath.Join(f.containers, dstCtr), 0o710)
				return filepath.Join(f.containers, dstCtr, "checkpoints")
			},
			wantErr: "no set-id or sticky bits",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCheckpointFixture(t)
			want := f.checkpoint(t, srcCtr, "cp1")
			cps := tt.setup(t, f)
			st := f.exportCheckpoint(t, "cp1.src", srcCtr, "cp1")
			err := f.fetch(st["ticket"].(string), "cp1.dst", dstCtr, "cp1")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				sameCheckpoint(t, filepath.Join(cps, "cp1"), filepath.Join(f.containers, srcCtr, "checkpoints", "cp1"), want)
			} else {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				if _, err := f.d.Get(&volume.GetRequest{Name: "cp1.dst"}); err == nil {
					t.Fatal("a failed fetch left its volume")
				}
				if _, err := os.Lstat(f.d.store.Dir("cp1.dst")); err == nil {
					t.Fatal("a failed fetch left its volume's directory")
				}
			}
			if tt.want == nil {
				if _, err := os.Lstat(cps); err == nil && len(entries(t, cps)) > 0 {
					t.Fatalf("%s holds %v", cps, entries(t, cps))
				}
				return
			}
			if got := entries(t, cps); !slices.Equal(got, tt.want) {
				t.Fatalf("%s holds %v, want %v", cps, got, tt.want)
			}
		})
	}
}

// A ticket that does not parse, or that names the target itself with a
// wrong credential, is refused and leaves nothing.
func TestCheckpointFetchHostileTicket(t *testing.T) {
	f := newCheckpointFixture(t)
	f.checkpoint(t, srcCtr, "cp1")
	cps := filepath.Join(f.containers, dstCtr, "checkpoints")
	ckMkdir(t, cps, 0o700)
	st := f.exportCheckpoint(t, "cp1.src", srcCtr, "cp1")
	good, err := peer.ParseTicket(st["ticket"].(string))
	if err != nil {
		t.Fatal(err)
	}
	wrongToken := good
	wrongToken.Token = strings.Repeat("B", 43)
	tests := []struct {
		name, ticket, ctr, cp, wantErr string
	}{
		{"not a ticket", "https://198.51.100.1/x", dstCtr, "cp1", "option checkpoint-from"},
		{"a path in the ticket", strings.Replace(good.String(), "?fp", "/../x?fp", 1), dstCtr, "cp1", "option checkpoint-from"},
		{"a wrong credential", wrongToken.String(), dstCtr, "cp1", "credential"},
		{"a hostile name", good.String(), dstCtr, "../../../etc", "checkpoint name"},
		{"a hostile container", good.String(), "../" + dstCtr[3:], "cp1", "full ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.fetch(tt.ticket, "cp1.dst", tt.ctr, tt.cp)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), good.Token) {
				t.Fatal("the error shows the credential")
			}
			if got := entries(t, cps); len(got) != 0 {
				t.Fatalf("a refused fetch left %v", got)
			}
		})
	}
}

// ckMust and ckMkdir are this file's own, so that it builds without the
// failpoints tag too.
func ckMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ckMkdir(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	ckMust(t, os.MkdirAll(p, mode))
	ckMust(t, os.Chmod(p, mode))
}
