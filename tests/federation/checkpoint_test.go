package federation_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// engineRoot is host h's /var/lib/docker, as seen from this machine.
func engineRoot(h *harness.Host) string { return filepath.Join(env.Base, h.Name, "docker") }

// fakeCheckpoint writes, as the engine's checkpoint create would, a
// checkpoint of container id on h: files of a few sizes, one large
// enough to travel in chunks, in a directory of the container's own
// checkpoints directory. It returns the checkpoint's directory.
func fakeCheckpoint(t *testing.T, h *harness.Host, id, name string) string {
	t.Helper()
	dir := filepath.Join(engineRoot(h), "containers", id, "checkpoints", name)
	files := []struct {
		path string
		size int
		mode os.FileMode
	}{
		{"config.json", 97, 0o644},
		{"descriptors.json", 0, 0o600},
		{"pages-1.img", 12<<20 + 4097, 0o600},
		{"pagemap-1.img", 8 << 10, 0o600},
		{"core-1.img", 130_000, 0o600},
		{"criu.work/dump.log", 3000, 0o644},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, f.size)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// entry is one entry of a tree: its mode, and a file's content.
type entry struct {
	mode    os.FileMode
	content []byte
}

// treeOf reads every entry below dir.
func treeOf(t *testing.T, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		en := entry{mode: fi.Mode()}
		if fi.Mode().IsRegular() {
			if en.content, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		out[rel] = en
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTree compares two trees byte for byte, with modes.
func sameTree(t *testing.T, what string, got, want map[string]entry) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: %s is missing", what, p)
		case g.mode != w.mode:
			t.Errorf("%s: %s has mode %v, the source %v", what, p, g.mode, w.mode)
		case !bytes.Equal(g.content, w.content):
			t.Errorf("%s: %s differs from the source (%d bytes against %d)", what, p, len(g.content), len(w.content))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s is not in the source", what, p)
		}
	}
}

// A checkpoint made on host 1 arrives whole, byte for byte and with its
// modes, in a created container's checkpoints directory on host 2, over
// the peer service and only with the export's credential; a bad ticket and
// hostile names are refused and leave nothing there.
func TestCheckpointTravels(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	srcCtr := src.Unique(t, "ctr")
	srcID := src.MustDocker(t, "create", "--name", srcCtr, env.Image, "sleep", "600")
	dir := fakeCheckpoint(t, src, srcID, "cp1")
	want := treeOf(t, dir)

	ctrl := src.Unique(t, "cp-export")
	src.MustDocker(t, "volume", "create", "-d", "cargo", "-o", "checkpoint="+srcID+"/cp1", "-o", "to="+dst.Context, ctrl)
	st := src.VolumeStatus(t, ctrl)
	var files, size float64
	for _, e := range want {
		if e.mode.IsRegular() {
			files++
			size += float64(len(e.content))
		}
	}
	if st["state"] != "exporting" || st["container"] != srcID || st["checkpoint"] != "cp1" ||
		st["files_total"] != files || st["bytes_total"] != size {
		t.Fatalf("status of the checkpoint export: %v", st)
	}
	ticket := st["ticket"].(string)
	id := st["export_id"].(string)
	token := ticket[len("cargo://")+len(id)+1 : strings.Index(ticket, "@")]

	// Nothing of it is served without the credential.
	base := "https://" + src.Addr + ":7450/v1/exports/" + id
	for _, hd := range [][]string{nil, {"Authorization: Bearer " + strings.Repeat("A", 43)}} {
		for _, route := range []string{"/manifest", "/files/1"} {
			if code, _ := httpCode(t, dst, base+route, hd...); code != "401" {
				t.Errorf("%s with %q: HTTP %s, want 401", route, hd, code)
			}
		}
	}

	dstCtr := dst.Unique(t, "ctr")
	dstID := dst.MustDocker(t, "create", "--name", dstCtr, env.Image, "sleep", "600")
	cps := filepath.Join(engineRoot(dst), "containers", dstID, "checkpoints")
	fetch := func(vol, ticket, ctr, name string) harness.Result {
		return dst.Docker(harness.Ctx(t), "volume", "create", "-d", "cargo",
			"-o", "checkpoint-from="+ticket, "-o", "container="+ctr, "-o", "checkpoint-name="+name, vol)
	}
	leftovers := func(what string, want ...string) {
		t.Helper()
		es, err := os.ReadDir(cps)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		var got []string
		for _, e := range es {
			got = append(got, e.Name())
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("after %s the checkpoints directory holds %v, want %v", what, got, want)
		}
	}

	wrong := strings.Replace(ticket, token, strings.Repeat("B", 43), 1)
	refused := []struct {
		name, ticket, ctr, cp, want string
	}{
		{"a wrong credential", wrong, dstID, "cp1", "credential"},
		{"a ticket with a path", strings.Replace(ticket, "?fp=", "/../../etc?fp=", 1), dstID, "cp1", "checkpoint-from"},
		{"a hostile name", ticket, dstID, "../../../../etc", "checkpoint name"},
		{"a hostile container", ticket, "../" + dstID[3:], "cp1", "full ID"},
		{"a container of another host", ticket, srcID, "cp1", "no container"},
	}
	for i, tt := range refused {
		vol := dst.Unique(t, fmt.Sprintf("refused%d", i))
		r := fetch(vol, tt.ticket, tt.ctr, tt.cp)
		if r.Err == nil || !strings.Contains(r.Combined(), tt.want) {
			t.Fatalf("%s: %v, want refused with %q", tt.name, r.Err, tt.want)
		}
		if strings.Contains(r.Combined(), token) {
			t.Fatalf("%s: the error shows the credential", tt.name)
		}
		if r := dst.Docker(harness.Ctx(t), "volume", "inspect", vol); r.Err == nil {
			t.Fatalf("%s: left volume %s", tt.name, vol)
		}
		leftovers(tt.name)
	}

	vol := dst.Unique(t, "cp-fetch")
	start := time.Now()
	if r := fetch(vol, ticket, dstID, "cp1"); r.Err != nil {
		t.Fatal(r.Err)
	}
	// The fetch goes on after the create returns, as a move polls it.
	st = waitState(t, dst, vol, "complete", time.Minute)
	t.Logf("fetched %.0f files, %.0f bytes in %s", files, size, time.Since(start).Round(time.Millisecond))
	leftovers("the fetch", "cp1")
	sameTree(t, "the fetched checkpoint", treeOf(t, filepath.Join(cps, "cp1")), want)

	ms, _ := st["duration_ms"].(float64)
	if st["state"] != "complete" || st["container"] != dstID || st["checkpoint"] != "cp1" ||
		st["files_total"] != files || st["bytes_total"] != size || ms <= 0 || ms > float64(time.Since(start).Milliseconds()) {
		t.Fatalf("status of the fetch: %v", st)
	}
	// The target told the source, whose export closed (just after the
	// target recorded the fetch complete).
	waitState(t, src, ctrl, "complete", 30*time.Second)
	if code, _ := httpCode(t, dst, base+"/manifest", "Authorization: Bearer "+token); code != "401" {
		t.Fatalf("the closed export's credential still gets HTTP %s", code)
	}

	// A second fetch into the same place is refused and changes nothing.
	if r := fetch(dst.Unique(t, "again"), ticket, dstID, "cp1"); r.Err == nil || !strings.Contains(r.Combined(), "already has a checkpoint") {
		t.Fatalf("a second fetch into cp1: %v", r.Err)
	}
	// Removing the volumes leaves both checkpoints where they are.
	src.MustDocker(t, "volume", "rm", ctrl)
	dst.MustDocker(t, "volume", "rm", vol)
	sameTree(t, "the fetched checkpoint after the removes", treeOf(t, filepath.Join(cps, "cp1")), want)
	sameTree(t, "the source's checkpoint after the removes", treeOf(t, dir), want)
}
