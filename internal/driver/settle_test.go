//go:build failpoints

package driver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/state"
)

// settledListing is what a container saw of the volume settleVolume makes,
// and so what its data/ must hold once settled.
var settledListing = []string{
	"changed.txt|file|644|new",
	"dir|dir|755|",
	"dir/b|file|644|b",
	"dir/c|file|644|c",
	"keep.txt|file|644|keep",
	"new.txt|file|600|fresh",
	"newdir|dir|700|",
	"newdir/n|file|644|n",
	"opaque|dir|755|",
	"opaque/y|file|644|y",
	"sub|dir|755|",
	"sub/inner.txt|file|644|inner",
}

// rootTime is the mtime a container gave the volume's top directory.
var rootTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// settleVolume writes on disk a federated volume whose copy is complete
// and whose upper layer holds what a container wrote: a changed file, new
// files and directories, deletions (whiteouts), an opaque directory and a
// new mode and time of the top directory.
func settleVolume(t *testing.T, s *state.Store, name string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("whiteouts and trusted xattrs need root")
	}
	data, upper := s.DataDir(name), s.UpperDir(name)
	files := map[string]string{
		"data/keep.txt": "keep", "data/changed.txt": "old", "data/deleted.txt": "gone",
		"data/dir/a": "a", "data/dir/b": "b", "data/opaque/x": "x", "data/sub/inner.txt": "inner",
		"upper/changed.txt": "new", "upper/dir/c": "c", "upper/opaque/y": "y", "upper/newdir/n": "n",
		"upper/new.txt": "fresh", "partial/3": "part", "manifest.gz": "not read once complete",
	}
	for p, content := range files {
		full := filepath.Join(s.Dir(name), p)
		mustMkdir(t, filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Chmod(filepath.Join(upper, "new.txt"), 0o600))
	must(t, os.Chmod(filepath.Join(upper, "newdir"), 0o700))
	mustMkdir(t, filepath.Join(s.WorkDir(name), "work"), 0o700)
	for _, w := range []string{"deleted.txt", "dir/a"} {
		must(t, unix.Mknod(filepath.Join(upper, w), unix.S_IFCHR, 0))
	}
	must(t, unix.Setxattr(filepath.Join(upper, "opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(t, os.Chmod(data, 0o755))
	must(t, os.Chmod(upper, 0o750))
	must(t, os.Chtimes(upper, rootTime, rootTime))
	now := time.Now().UTC()
	v := &state.Volume{Name: name, Kind: state.KindFederated, CreatedAt: now.Truncate(time.Second),
		Federation: &state.FederationRecord{Ticket: "cargo://x", Source: "192.0.2.1:7450", FilesTotal: 7, BytesTotal: 20,
			StartedAt: now, CompletedAt: now}}
	must(t, s.Save(v))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(p, mode))
}

// listTree lists every entry below dir: path, type, permissions, content.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case fi.IsDir():
			out = append(out, fmt.Sprintf("%s|dir|%o|", rel, fi.Mode().Perm()))
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, fmt.Sprintf("%s|file|%o|%s", rel, fi.Mode().Perm(), b))
		default:
			out = append(out, fmt.Sprintf("%s|%v|%o|", rel, fi.Mode().Type(), fi.Mode().Perm()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out // in WalkDir's lexical order
}

// checkSettled checks a volume made by settleVolume is settled, whole.
func checkSettled(t *testing.T, f *fixture, name string) {
	t.Helper()
	v := f.d.volume(name)
	if v.Kind != state.KindLocal || !v.Federation.Settled || v.Federation.Step() != "" || v.Federation.SettleRoot != nil {
		t.Fatalf("record after settling: kind %s, %+v", v.Kind, *v.Federation)
	}
	s := f.d.store
	if got := listTree(t, s.DataDir(name)); !slices.Equal(got, settledListing) {
		t.Fatalf("data after settling:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(settledListing, "\n"))
	}
	for _, p := range []string{s.UpperDir(name), s.WorkDir(name), filepath.Join(s.Dir(name), "partial"), s.ManifestPath(name)} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left after settling: %v", p, err)
		}
	}
	var st unix.Stat_t
	must(t, unix.Lstat(s.DataDir(name), &st))
	if st.Mode&0o7777 != 0o750 || st.Mtim.Nano() != rootTime.UnixNano() {
		t.Errorf("top directory: mode %o mtime %v, want 750 and %v (what the container saw)",
			st.Mode&0o7777, time.Unix(0, st.Mtim.Nano()).UTC(), rootTime)
	}
	g, err := f.d.Get(&volume.GetRequest{Name: name})
	must(t, err)
	if st := g.Volume.Status; st["state"] != "complete" || st["settled"] != true || st["error"] != nil {
		t.Errorf("status after settling: %v", st)
	}
	if xs, _ := unix.Lgetxattr(filepath.Join(s.DataDir(name), "opaque"), "trusted.overlay.opaque", make([]byte, 8)); xs > 0 {
		t.Error("overlay xattrs left in the settled data")
	}
}

// Settling stops at each of its step boundaries, as a crash would stop it
// there (a failpoint's error: nothing after it runs); the next start
// finishes it, and the volume holds what the container saw.
func TestSettleResumesAfterEachStep(t *testing.T) {
	points := []struct {
		point string
		// step is what the record says when settling stops there.
		step state.SettleStep
	}{
		{"driver.settle.start", ""},
		{"driver.settle.before-merge", state.SettleMerge},
		{"replica.settle.before-entry", state.SettleMerge}, // the first entry
		{"replica.settle.before-entry#3", state.SettleMerge},
		{"replica.settle.before-work-remove", state.SettleMerge},
		{"driver.settle.after-merge", state.SettleMerge},
		{"driver.settle.before-cleanup", state.SettleCleanup},
		{"driver.settle.before-record", state.SettleCleanup},
		{"driver.settle.after-record", ""},
	}
	for _, tt := range points {
		t.Run(tt.point, func(t *testing.T) {
			f := newFixture(t)
			mustCreate(t, f.d, "other", nil)
			settleVolume(t, f.d.store, "fed")
			point, nth, _ := strings.Cut(tt.point, "#")
			hits := 0
			reset := failpoint.SetFunc(point, func() error {
				if hits++; nth != "" && fmt.Sprint(hits) != nth {
					return nil
				}
				return errors.New("crash")
			})
			f.restart(t) // the start settles the complete copy, and stops
			reset()
			if hits == 0 {
				t.Fatalf("settling never reached %s", point)
			}
			rec := f.d.volume("fed")
			if point != "driver.settle.after-record" {
				if rec.Kind != state.KindFederated || rec.Federation.Step() != tt.step {
					t.Fatalf("stopped at %s: kind %s step %q, want federated, step %q", tt.point, rec.Kind, rec.Federation.Step(), tt.step)
				}
				g, err := f.d.Get(&volume.GetRequest{Name: "fed"})
				must(t, err)
				if st := g.Volume.Status; st["state"] != "failed" || !strings.Contains(fmt.Sprint(st["error"]), "crash") ||
					!strings.Contains(fmt.Sprint(st["error"]), "finish settling") {
					t.Fatalf("status of the volume whose settling failed: %v", st)
				}
			}
			// The other volume is not affected.
			if _, err := f.d.Mount(&volume.MountRequest{Name: "other", ID: "c1"}); err != nil {
				t.Fatalf("another volume while one failed: %v", err)
			}
			f.restart(t)
			checkSettled(t, f, "fed")
		})
	}
}

// A failed settle is retried by the volume's next mount, which then works.
func TestMountRetriesFailedSettle(t *testing.T) {
	f := newFixture(t)
	settleVolume(t, f.d.store, "fed")
	reset := failpoint.Set("driver.settle.after-merge", "error")
	f.restart(t)
	if _, err := f.d.Mount(&volume.MountRequest{Name: "fed", ID: "c1"}); err == nil ||
		!strings.Contains(err.Error(), "finish settling") {
		t.Fatalf("mount while settling still fails: %v", err)
	}
	reset()
	r, err := f.d.Mount(&volume.MountRequest{Name: "fed", ID: "c1"})
	if err != nil || r.Mountpoint != f.mp("fed") {
		t.Fatalf("mount once settling can finish: %v %v", r, err)
	}
	must(t, f.d.Unmount(&volume.UnmountRequest{Name: "fed", ID: "c1"}))
	checkSettled(t, f, "fed")
}

// A record of a plugin from before settle steps, interrupted after it
// removed the upper layer and before it recorded the volume settled: that
// start failed, and the plugin with it, restarting in a loop with every
// volume of the host unavailable.
func TestSettleOfOldRecordWithoutUpper(t *testing.T) {
	f := newFixture(t)
	settleVolume(t, f.d.store, "fed")
	s := f.d.store
	// What the old plugin had done: merged, removed work/ and upper/.
	dataDir := s.DataDir("fed")
	must(t, os.RemoveAll(dataDir))
	for _, l := range settledListing {
		p, typ, _ := strings.Cut(l, "|")
		perm, content, _ := strings.Cut(strings.SplitN(l, "|", 3)[2], "|")
		mode, err := strconv.ParseUint(perm, 8, 32)
		must(t, err)
		full := filepath.Join(dataDir, p)
		mustMkdir(t, filepath.Dir(full), 0o755)
		if strings.HasPrefix(typ, "dir") {
			mustMkdir(t, full, 0o755)
		} else {
			must(t, os.WriteFile(full, []byte(content), 0o644))
		}
		must(t, os.Chmod(full, os.FileMode(mode)))
	}
	must(t, os.Chmod(dataDir, 0o750))
	must(t, os.Chtimes(dataDir, rootTime, rootTime))
	must(t, os.RemoveAll(s.UpperDir("fed")))
	must(t, os.RemoveAll(s.WorkDir("fed")))
	rec := loadRecord(t, s, "fed")
	rec.Federation.Settling = true
	must(t, s.Save(rec))
	f.restart(t)
	checkSettled(t, f, "fed")
}

func loadRecord(t *testing.T, s *state.Store, name string) *state.Volume {
	t.Helper()
	res, err := s.Load()
	must(t, err)
	v := res.Volumes[name]
	if v == nil {
		t.Fatalf("no record of %s", name)
	}
	return v
}
