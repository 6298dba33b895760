//go:build failpoints

package driver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/state"
)

// statusOf is the Status Get returns.
func statusOf(t *testing.T, d *Driver, name string) map[string]any {
	t.Helper()
	g, err := d.Get(&volume.GetRequest{Name: name})
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return g.Volume.Status
}

// The plugin answers at once however long its volumes take to recover:
// New returns, List and Get answer and show the volumes recovering, and a
// mount of a recovering volume waits for that volume only.
func TestRecoveryInTheBackground(t *testing.T) {
	f := newFixture(t)
	for i := range 20 {
		mustCreate(t, f.d, fmt.Sprintf("v%02d", i), nil)
	}
	settleVolume(t, f.d.store, "fed")
	// Hold the settle of fed after the restart.
	release := make(chan struct{})
	held := make(chan string, 100)
	defer failpoint.SetFunc("driver.settle.resume", func() error { held <- "fed"; <-release; return nil })()

	store, err := state.Open(filepath.Join(f.root, "state"))
	must(t, err)
	cfg := Config{Store: store, MountDir: f.mountDir, RunDir: filepath.Join(f.root, "run"), Mounter: f.mnt, Log: f.d.log}
	prompt(t, "New", func() error {
		d, err := New(cfg)
		f.d = d
		return err
	})
	d := f.d
	prompt(t, "List", func() error {
		names, err := listed(d)
		if err == nil && len(names) != 21 {
			err = fmt.Errorf("listed %v", names)
		}
		return err
	})
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("recovery did not reach the settle of fed")
	}
	if st := statusOf(t, d, "fed"); st["state"] != "complete" || st["error"] != errRecovering {
		t.Fatalf("status of a volume recovering: %v", st)
	}
	// The volumes not held recover and mount while the others wait.
	waitFor(t, 10*time.Second, "the volumes not held recover", func() bool {
		return statusOf(t, d, "v19")["error"] == nil
	})
	prompt(t, "mounting a recovered volume while others recover", func() error {
		_, err := d.Mount(&volume.MountRequest{Name: "v19", ID: "c1"})
		return err
	})
	mounted := make(chan error, 1)
	go func() {
		_, err := d.Mount(&volume.MountRequest{Name: "fed", ID: "c2"})
		mounted <- err
	}()
	select {
	case err := <-mounted:
		t.Fatalf("a mount of a recovering volume did not wait for it: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-mounted:
		if err != nil {
			t.Fatalf("mount once recovered: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the mount did not go on once the volume recovered")
	}
	f.waitRecovered(t)
	checkSettledData(t, f, "fed")
	d.Close()
}

// checkSettledData is checkSettled for a volume now mounted.
func checkSettledData(t *testing.T, f *fixture, name string) {
	t.Helper()
	if v := f.d.volume(name); v.Kind != state.KindLocal || !v.Federation.Settled {
		t.Fatalf("not settled: %+v", v)
	}
}

// A volume whose recovery fails is failed alone: a federated volume that
// holds mount references and whose copy cannot resume (its manifest is
// gone) made the start fail, and the plugin with every volume.
func TestFailedRecoveryIsQuarantined(t *testing.T) {
	f := newFixture(t)
	mustCreate(t, f.d, "good", nil)
	if _, err := f.d.Mount(&volume.MountRequest{Name: "good", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	token, _, err := peer.NewToken()
	must(t, err)
	ticket := peer.Ticket{Addr: "192.0.2.1:7450", ExportID: "e1", Token: token, Fingerprint: "sha256:" + strings.Repeat("ab", 32)}
	s := f.d.store
	mustMkdir(t, s.DataDir("bad"), 0o700)
	mustMkdir(t, s.UpperDir("bad"), 0o700)
	must(t, s.Save(&state.Volume{Name: "bad", Kind: state.KindFederated, CreatedAt: time.Now().UTC(), Mounts: []string{"c9"},
		Federation: &state.FederationRecord{Ticket: ticket.String(), Source: ticket.Addr, StartedAt: time.Now().UTC()}}))
	f.mnt.stack[f.mp("good")] = 0 // the engine unmounted everything
	f.restart(t)

	st := statusOf(t, f.d, "bad")
	msg := fmt.Sprint(st["error"])
	if st["state"] != "failed" || !strings.Contains(msg, "resuming the copy") || !strings.Contains(msg, "manifest.gz") ||
		!strings.Contains(msg, "remove the volume and move it again") {
		t.Fatalf("status of the volume whose copy cannot resume: %v", st)
	}
	if strings.Contains(msg, token) {
		t.Fatalf("the status shows the credential: %s", msg)
	}
	if got := f.mnt.stack[f.mp("good")]; got != 1 {
		t.Fatalf("the good volume's mount: %d, want re-established", got)
	}
	if _, err := f.d.Mount(&volume.MountRequest{Name: "good", ID: "c2"}); err != nil {
		t.Fatalf("mounting another volume: %v", err)
	}
	// Its mount retries, and fails with the reason.
	if _, err := f.d.Mount(&volume.MountRequest{Name: "bad", ID: "c10"}); err == nil || !strings.Contains(err.Error(), "resuming the copy") {
		t.Fatalf("mount of the failed volume: %v", err)
	}
	// It can be removed once the engine lets go of it.
	must(t, f.d.Unmount(&volume.UnmountRequest{Name: "bad", ID: "c9"}))
	if err := f.d.Remove(&volume.RemoveRequest{Name: "bad"}); err != nil {
		t.Fatalf("removing the failed volume: %v", err)
	}
	if _, err := os.Stat(s.Dir("bad")); !os.IsNotExist(err) {
		t.Fatalf("removed but its directory remains: %v", err)
	}
}

// A mount that cannot be re-established fails its volume only.
func TestFailedRemountIsQuarantined(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"va", "vb"} {
		mustCreate(t, f.d, n, nil)
		if _, err := f.d.Mount(&volume.MountRequest{Name: n, ID: "c-" + n}); err != nil {
			t.Fatal(err)
		}
		f.mnt.stack[f.mp(n)] = 0
	}
	// vb's data is gone, replaced by a file.
	must(t, os.RemoveAll(f.d.store.DataDir("vb")))
	must(t, os.WriteFile(f.d.store.DataDir("vb"), nil, 0o600))
	failBind := &failingBind{fakeMounter: f.mnt, target: f.mp("vb")}
	f.cfg = func(c *Config) { c.Mounter = failBind }
	f.restart(t)
	if f.mnt.stack[f.mp("va")] != 1 {
		t.Fatal("va's mount was not re-established")
	}
	st := statusOf(t, f.d, "vb")
	if st["state"] != "failed" || !strings.Contains(fmt.Sprint(st["error"]), "re-establishing the mount") ||
		!strings.Contains(fmt.Sprint(st["error"]), "docker ps --filter volume=vb") {
		t.Fatalf("status of vb: %v", st)
	}
	if st := statusOf(t, f.d, "va"); st["state"] != "local" || st["error"] != nil {
		t.Fatalf("status of va: %v", st)
	}
}

// failingBind fails binds onto one target, as a bind of a file onto a
// directory does.
type failingBind struct {
	*fakeMounter
	target string
}

func (m *failingBind) Bind(source, target string) error {
	if target == m.target {
		return fmt.Errorf("bind-mounting %s on %s: not a directory", source, target)
	}
	return m.fakeMounter.Bind(source, target)
}

// After a plugin crash the previous process's overlay is still at the
// mountpoint of a federated volume, held by containers, over a view of
// the source that died with it. No second overlay may be mounted on its
// upper layer: mounts are refused until the containers let go.
func TestNoSecondOverlayOnAnUpper(t *testing.T) {
	f := newFixture(t)
	settleVolume(t, f.d.store, "fed")
	// A container of the previous process holds it.
	rec := loadRecord(t, f.d.store, "fed")
	rec.Mounts = []string{"old"}
	must(t, f.d.store.Save(rec))
	mp := f.mp("fed")
	mustMkdir(t, mp, 0o755)
	f.mnt.stack[mp] = 1
	f.mnt.overlays[mp] = fakeOverlay{lower: filepath.Join(f.root, "run", "fuse", "fed"), upper: f.d.store.UpperDir("fed")}
	f.restart(t)

	if f.mnt.stack[mp] != 1 {
		t.Fatalf("the previous overlay was replaced: %d mounts", f.mnt.stack[mp])
	}
	_, err := f.d.Mount(&volume.MountRequest{Name: "fed", ID: "new"})
	if err == nil || !strings.Contains(err.Error(), "containers still use the volume's previous mount") {
		t.Fatalf("mount beside the previous overlay: %v", err)
	}
	if st := statusOf(t, f.d, "fed"); !strings.Contains(fmt.Sprint(st["error"]), "restart them") {
		t.Fatalf("status says nothing of the previous mount: %v", st)
	}
	// The container stops: the engine unmounts its ID, the old overlay
	// goes, and the volume settles and mounts.
	must(t, f.d.Unmount(&volume.UnmountRequest{Name: "fed", ID: "old"}))
	if _, err := f.d.Mount(&volume.MountRequest{Name: "fed", ID: "new"}); err != nil {
		t.Fatalf("mount once the previous overlay is gone: %v", err)
	}
	if v := f.d.volume("fed"); v.Kind != state.KindLocal {
		t.Fatalf("not settled once unused: %s", v.Kind)
	}
}

// An overlay of the previous process over the replica itself (the copy
// was complete when it was mounted) is alive: it is shared, as a mount is.
func TestPreviousOverlayOverTheReplicaIsShared(t *testing.T) {
	f := newFixture(t)
	settleVolume(t, f.d.store, "fed")
	rec := loadRecord(t, f.d.store, "fed")
	rec.Mounts = []string{"old"}
	must(t, f.d.store.Save(rec))
	mp := f.mp("fed")
	mustMkdir(t, mp, 0o755)
	f.mnt.stack[mp] = 1
	f.mnt.overlays[mp] = fakeOverlay{lower: f.d.store.DataDir("fed"), upper: f.d.store.UpperDir("fed")}
	f.restart(t)
	if _, err := f.d.Mount(&volume.MountRequest{Name: "fed", ID: "new"}); err != nil {
		t.Fatalf("mount sharing a live overlay: %v", err)
	}
	if f.mnt.stack[mp] != 1 {
		t.Fatalf("%d mounts, want the one shared", f.mnt.stack[mp])
	}
}

// An overlay on the upper layer anywhere else also keeps a new one off.
func TestOverlayElsewhereOnTheUpper(t *testing.T) {
	f := newFixture(t)
	settleVolume(t, f.d.store, "fed")
	f.mnt.overlays["/elsewhere"] = fakeOverlay{lower: "/x", upper: f.d.store.UpperDir("fed")}
	f.restart(t)
	if v := f.d.volume("fed"); v.Kind != state.KindFederated {
		t.Fatal("settled under a live overlay")
	}
	if _, err := f.d.Mount(&volume.MountRequest{Name: "fed", ID: "c1"}); err == nil ||
		!strings.Contains(err.Error(), "previous mount") {
		t.Fatalf("mount: %v", err)
	}
}

// Creating an existing volume with other options names them, with a
// ticket's credential redacted.
func TestConflictingCreateRedactsTheTicket(t *testing.T) {
	f := newFixture(t)
	mustCreate(t, f.d, "data", nil)
	token, _, err := peer.NewToken()
	must(t, err)
	ticket := peer.Ticket{Addr: "192.0.2.1:7450", ExportID: "e1", Token: token, Fingerprint: "sha256:" + strings.Repeat("ab", 32)}
	for _, from := range []string{ticket.String(), "cargo://e1:" + token + "@nowhere", "garbage" + token} {
		err := f.d.Create(&volume.CreateRequest{Name: "data", Options: map[string]string{"from": from}})
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("conflicting create: %v", err)
		}
		if strings.Contains(err.Error(), token) {
			t.Fatalf("the error shows the credential: %v", err)
		}
	}
	err = f.d.Create(&volume.CreateRequest{Name: "data", Options: map[string]string{"from": ticket.String()}})
	if !strings.Contains(err.Error(), "from=cargo://e1:xxxxx@192.0.2.1:7450?fp=sha256:") {
		t.Fatalf("the error does not name the ticket: %v", err)
	}
}

// An export open when the plugin stopped is served again after the start,
// once the volume it exports is recovered; the peer service waits for it.
func TestOpenExportServedAgain(t *testing.T) {
	f := newFixture(t)
	f.cfg = func(c *Config) {
		c.Exports = export.NewRegistry()
		c.Advertise = "192.0.2.1:7450"
		c.Fingerprint = "sha256:" + strings.Repeat("cd", 32)
	}
	f.restart(t)
	mustCreate(t, f.d, "src", nil)
	mustCreate(t, f.d, "src.x", map[string]string{"export": "src", "to": "h2"})
	f.restart(t)
	select {
	case <-f.d.ExportsServed():
	case <-time.After(10 * time.Second):
		t.Fatal("the open export is not served again")
	}
	if oe := f.d.openExportOf("src.x"); oe == nil || oe.exp == nil {
		t.Fatal("no export served for src.x")
	}
	if st := statusOf(t, f.d, "src.x"); st["state"] != "exporting" || st["error"] != nil {
		t.Fatalf("status of the export volume: %v", st)
	}
	if st := statusOf(t, f.d, "src"); st["state"] != "exporting" {
		t.Fatalf("status of the exported volume: %v", st)
	}
	must(t, f.d.Remove(&volume.RemoveRequest{Name: "src.x"}))
}
