package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/copier"
	"github.com/cargo-migrate/cargo/internal/cpuid"
	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/replica"
	"github.com/cargo-migrate/cargo/internal/state"
	"github.com/cargo-migrate/cargo/internal/version"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// legacyStatus is the Status the driver built as a map before it went
// through volstatus, kept to show users see the same keys and values.
func legacyStatus(d *Driver, v *state.Volume) map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v.Kind == state.KindExport {
		e := v.Export
		st := map[string]any{
			"state": "exporting", "volume": e.Volume, "to": e.To, "export_id": e.ID,
			"ticket": e.Ticket, "completed_at": volstatus.Time(e.CompletedAt),
		}
		if !e.Open() {
			st["state"] = "complete"
			st["report"] = e.Report
		}
		if oe := d.exports[v.Name]; oe != nil {
			files, bytes := oe.exp.Totals()
			st["files_total"], st["bytes_total"] = files, bytes
		}
		return st
	}
	st := map[string]any{"state": "local"}
	if fr := v.Federation; fr != nil {
		st["source"] = fr.Source
		if c := v.Options["context"]; c != "" {
			st["source_context"] = c
		}
		if fr.Settled {
			st["settled"] = true
		}
		st["started_at"] = volstatus.Time(fr.StartedAt)
		st["completed_at"] = volstatus.Time(fr.CompletedAt)
		st["files_total"] = fr.FilesTotal
		st["bytes_total"] = fr.BytesTotal
		switch f := d.feds[v.Name]; {
		case f != nil && fr.CompletedAt.IsZero():
			cs := f.cop.Status()
			st["state"] = string(cs.State)
			st["files_copied"] = cs.FilesCopied
			st["bytes_copied"] = cs.BytesCopied
			st["rate"] = int64(cs.Rate)
			st["updated_at"] = volstatus.Time(cs.Updated)
			if cs.Error != "" {
				st["error"] = cs.Error
			}
		case !fr.CompletedAt.IsZero():
			st["state"] = "complete"
			st["files_copied"] = fr.FilesTotal
			st["bytes_copied"] = fr.BytesTotal
			st["rate"] = 0
			st["updated_at"] = volstatus.Time(fr.CompletedAt)
		default:
			st["state"] = "failed"
			st["error"] = "the copy is not running; see the plugin's log"
		}
	}
	if ctrl := d.frozenByLocked(v.Name); ctrl != nil {
		st["state"] = "exporting"
		st["export"] = ctrl.Name
		st["to"] = ctrl.Export.To
	}
	return st
}

func legacyHost(d *Driver, fs *unix.Statfs_t, err error) map[string]any {
	st := map[string]any{"version": version.Version, "advertise": d.cfg.Advertise, "fingerprint": d.cfg.Fingerprint}
	if err == nil {
		st["free_bytes"] = int64(fs.Bavail) * int64(fs.Bsize)
		st["total_bytes"] = int64(fs.Blocks) * int64(fs.Bsize)
	} else {
		st["error"] = fmt.Sprintf("measuring free space: %v", err)
	}
	return st
}

// wire is a Status as the engine passes it on: JSON.
func wire(t *testing.T, m map[string]any) map[string]json.RawMessage {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// differing lists the keys whose presence or value differ.
func differing(t *testing.T, a, b map[string]any) []string {
	t.Helper()
	wa, wb := wire(t, a), wire(t, b)
	var out []string
	for _, k := range slices.Sorted(maps.Keys(wa)) {
		if vb, ok := wb[k]; !ok || string(vb) != string(wa[k]) {
			out = append(out, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(wb)) {
		if _, ok := wa[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// knownDifferences are where volstatus.Map does not show what the driver
// showed: a key the driver set to "" or 0 that volstatus omits, or the
// reverse. Each waits on volstatus; once it matches, the entry can go.
var knownDifferences = map[string][]string{
	// "to" was "" for an export opened without to=.
	"frozen, no to": {"to"},
	"export, no to": {"to"},
	// A closed export showed no totals (it is not served), and its
	// report even when empty.
	"export closed, empty report": {"bytes_total", "files_total", "report"},
	"export closed":               {"bytes_total", "files_total"},
	// A copy that does not run showed no counters.
	"federated, copy not running": {"bytes_copied", "files_copied", "rate"},
	// A full disk showed free_bytes 0, which docker migrate's disk check
	// reads; omitted, the check is skipped.
	"host, disk full": {"free_bytes"},
}

func TestStatusUnchanged(t *testing.T) {
	f := newFixture(t)
	f.cfg = func(c *Config) {
		c.Exports = export.NewRegistry()
		c.Advertise = "192.0.2.1:7450"
		c.Fingerprint = "sha256:" + strings.Repeat("cd", 32)
	}
	f.restart(t)
	d := f.d
	for _, n := range []string{"plain", "src", "src2", "src3", "src4"} {
		mustCreate(t, d, n, nil)
	}
	mustCreate(t, d, "src.x", map[string]string{"export": "src", "to": "h2"})
	mustCreate(t, d, "src2.x", map[string]string{"export": "src2"})
	mustCreate(t, d, "src3.x", map[string]string{"export": "src3", "to": "h3"})
	mustCreate(t, d, "src4.x", map[string]string{"export": "src4", "to": "h4"})
	if err := d.exportCompleted("src3.x", "copied 1 file"); err != nil {
		t.Fatal(err)
	}
	if err := d.exportCompleted("src4.x", ""); err != nil {
		t.Fatal(err)
	}

	started := time.Date(2024, 5, 1, 10, 0, 0, 123e6, time.UTC)
	fed := func(name string, kind state.Kind, fr state.FederationRecord, opts map[string]string) {
		fr.Source, fr.StartedAt, fr.FilesTotal, fr.BytesTotal = "192.0.2.9:7450", started, 3, 300
		v := &state.Volume{Name: name, Kind: kind, CreatedAt: started, Options: opts, Federation: &fr}
		if err := os.MkdirAll(d.store.DataDir(name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := d.store.Save(v); err != nil {
			t.Fatal(err)
		}
		d.setVolume(v)
	}
	done := started.Add(time.Minute)
	fed("fed-running", state.KindFederated, state.FederationRecord{}, map[string]string{"context": "h1"})
	fed("fed-dead", state.KindFederated, state.FederationRecord{}, nil)
	fed("fed-complete", state.KindFederated, state.FederationRecord{CompletedAt: done}, nil)
	fed("fed-settled", state.KindLocal, state.FederationRecord{CompletedAt: done, Settled: true}, map[string]string{"context": "h1"})
	mustCreate(t, d, "fed-settled.x", map[string]string{"export": "fed-settled", "to": "h5"})
	d.setFed("fed-running", runningCopy(t, d, "fed-running"))

	cases := map[string]string{
		"local":                       "plain",
		"frozen":                      "src",
		"frozen, no to":               "src2",
		"export":                      "src.x",
		"export, no to":               "src2.x",
		"export closed":               "src3.x",
		"export closed, empty report": "src4.x",
		"unfrozen after the export":   "src3",
		"federated, copying":          "fed-running",
		"federated, copy not running": "fed-dead",
		"federated, complete":         "fed-complete",
		"settled, frozen":             "fed-settled",
		"export of a settled volume":  "fed-settled.x",
	}
	for what, name := range cases {
		t.Run(what, func(t *testing.T) {
			v := d.volume(name)
			old := legacyStatus(d, v)
			g, err := d.Get(&volume.GetRequest{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			checkSame(t, what, old, g.Volume.Status)
		})
	}

	for what, statErr := range map[string]error{"host": nil, "host, disk full": nil, "host, statfs fails": errors.New("no such file")} {
		t.Run(what, func(t *testing.T) {
			fs := &unix.Statfs_t{Bavail: 1000, Blocks: 5000, Bsize: 4096}
			if what == "host, disk full" {
				fs.Bavail = 0
			}
			checkSame(t, what, legacyHost(d, fs, statErr), d.hostStatus(fs, statErr).Map())
		})
	}
	// And the live answer has the same keys, and the host facts of a
	// live move's checks.
	g, err := d.Get(&volume.GetRequest{Name: volstatus.HostInfo})
	if err != nil {
		t.Fatal(err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(d.store.Root(), &fs); err != nil {
		t.Fatal(err)
	}
	want := legacyHost(d, &fs, nil)
	want["cpu_flags"], want["mem_available_bytes"] = "", 0
	if _, ok := cpuid.ReadXSave(); ok {
		want["xsave_features"], want["xsave_size"], want["xsave_max_size"] = "", 0, 0
	}
	if old, now := slices.Sorted(maps.Keys(want)), slices.Sorted(maps.Keys(g.Volume.Status)); !slices.Equal(old, now) {
		t.Errorf("cargo.host keys %v, were %v", now, old)
	}
}

func checkSame(t *testing.T, what string, old, now map[string]any) {
	t.Helper()
	diff := differing(t, old, now)
	var unexpected []string
	for _, k := range diff {
		if !slices.Contains(knownDifferences[what], k) {
			unexpected = append(unexpected, k)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("keys %v changed:\n was %s\n now %s", unexpected, wire(t, old), wire(t, now))
	} else if len(diff) > 0 {
		t.Logf("known difference in %v (volstatus):\n was %s\n now %s", diff, wire(t, old), wire(t, now))
	}
}

// runningCopy is a copy that has started and copied nothing yet.
func runningCopy(t *testing.T, d *Driver, name string) *federation {
	t.Helper()
	src := t.TempDir()
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprint(i)), []byte(strings.Repeat("x", 100)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root, err := os.OpenRoot(src)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	m, err := manifest.Walk(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replica.Open(d.store.Dir(name), m)
	if err != nil {
		t.Fatal(err)
	}
	cop := copier.New(rep, nil, copier.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() {
		cop.Close()
		rep.Close()
	})
	return &federation{name: name, m: m, rep: rep, cop: cop, cancel: func() {}}
}

func TestCopyStates(t *testing.T) {
	for cs, want := range map[copier.State]volstatus.State{
		copier.StateCopying:  volstatus.StateCopying,
		copier.StateStalled:  volstatus.StateStalled,
		copier.StateComplete: volstatus.StateComplete,
		copier.StateFailed:   volstatus.StateFailed,
	} {
		if got := copyState(cs); got != want {
			t.Errorf("copyState(%q) = %q, want %q", cs, got, want)
		}
	}
}
