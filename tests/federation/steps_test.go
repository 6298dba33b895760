package federation_test

import (
	"bufio"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/replica"
	"github.com/cargo-migrate/cargo/tests/harness"
)

// stepsChunks is how many chunks the large file of each volume has: more
// than one, so that chunks in flight, the last one and the commit are
// steps apart; few, so that the copy is quick.
const stepsChunks = 3

// The chunk log's layout (internal/replica/journal.go): a header, then one
// record per chunk on disk.
const (
	chunkLogHeader = len("cargo\x00j1")
	chunkLogRecord = 8
)

// copyStep is a failpoint on a copy's data path, with what shows that the
// copy has reached it: the state on disk it leaves there, which a copy
// paused at the point cannot go past.
type copyStep struct {
	point string
	// onSource: the point is in the source's plugin (closing the
	// export); the others are in the target's.
	onSource bool
	reached  func(t *testing.T, c *stepCopy) error
}

// copySteps are the failpoints a copy of a volume holding small files,
// hard links and a large file of a few chunks passes, in the order it
// passes them. Skeleton, the small files' writer and the large file's
// chunks and commit each run on the way of a first copy; a copy resumed
// after a kill passes the same points again. replica.link.before-name is
// reached by both the small hard-linked file and the large one, whichever
// is first.
var copySteps = []copyStep{
	{point: "replica.skeleton.before-relink", reached: skeletonMade},
	{point: "replica.whole.before-rename", reached: smallWritten},
	{point: "replica.whole.before-done", reached: smallPlaced},
	{point: "replica.link.before-name", reached: linkPending},
	// The three chunk steps leave the same on disk for a kill (the sync
	// between them matters to a power cut only): a chunk's bytes in the
	// partial file, no record.
	{point: "replica.chunk.before-log", reached: chunkWritten},
	{point: "replica.chunk.before-sync", reached: chunkWritten},
	{point: "replica.chunk.before-record", reached: chunkWritten},
	{point: "replica.finish.before-commit", reached: journaled(false)},
	{point: "replica.finish.before-rename", reached: journaled(true)},
	{point: "replica.after-rename", reached: largeInPlace},
	{point: "replica.finish.before-log-remove", reached: largeInPlace},
	{point: "copier.before-verify", reached: verifyPending},
	{point: "driver.export.before-record", onSource: true, reached: reportReceived},
	{point: "driver.export.before-close", onSource: true, reached: completionRecorded},
}

// The plugin is SIGKILLed at each step of a copy, from the first
// directory made on the target to the export closed on the source,
// while a failpoint holds it there; the engine restarts it. Each time the
// restarted plugin answers within a second, the copy completes with
// counters that match the source, the volume holds exactly the source's
// tree (content, modes, owners, link counts), the export volume on the
// source is complete with the target's report and the source volume is
// unfrozen.
//
// Each step has its own volume, so that each kill finds a copy at that
// step and nowhere past it; the volumes are filled and listed on the
// source up front, all in one container each.
func TestTargetPluginKilledAtEachCopyStep(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[2]
	vols := make([]string, len(copySteps))
	for i := range copySteps {
		vols[i] = src.Unique(t, "s"+strconv.Itoa(i))
		src.MustDocker(t, "volume", "create", "-d", "cargo", vols[i])
	}
	fillVolumes(t, src, vols)
	wants := listings(t, src, vols)
	for i, step := range copySteps {
		t.Run(step.point, func(t *testing.T) {
			env.PluginLogOnFailure(t)
			c := &stepCopy{src: src, dst: dst, vol: vols[i], srcLog: len(src.EngineLog())}
			c.tree = readSourceTree(t, filepath.Join(stateDir(src), "volumes", c.vol, "data"))
			c.dir = filepath.Join(stateDir(dst), "volumes", c.vol)
			killed := dst
			if step.onSource {
				killed = src
			}
			armFailpoints(t, killed, step.point+"=pause")
			c.ctrl = federate(t, src, dst, c.vol)
			heldAt(t, step.point, func() error { return step.reached(t, c) })
			old := pluginPID(t, killed)
			if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// Disarmed before the engine can start the next process,
			// which then runs through.
			armFailpoints(t, killed, "")
			restartedAnswers(t, killed, old, c.vol)
			c.completes(t, wants[c.vol])
			if step.onSource {
				if got := src.Run(t, "-v", c.vol+":/data", env.Image, "cat", "/data/small/f1"); got != "small file 1" {
					t.Fatalf("the source volume after its export closed reads %q", got)
				}
			}
		})
	}
}

// heldAt waits until the copy shows it is at point and stays there: a
// copy paused at the point cannot leave the state reached shows, while
// one going by leaves it within milliseconds (or is, as in a sync, where
// a kill leaves the same on disk).
func heldAt(t *testing.T, point string, reached func() error) {
	t.Helper()
	const hold = 300 * time.Millisecond
	var since time.Time
	harness.Eventually(t, time.Minute, "the copy is held at "+point, func() error {
		if err := reached(); err != nil {
			since = time.Time{}
			return err
		}
		if since.IsZero() {
			since = time.Now()
		}
		if d := time.Since(since); d < hold {
			return fmt.Errorf("at the point for %v, not yet %v", d.Round(time.Millisecond), hold)
		}
		return nil
	})
}

// stepCopy is one volume's copy in TestTargetPluginKilledAtEachCopyStep.
type stepCopy struct {
	src, dst  *harness.Host
	vol, ctrl string
	tree      sourceTree
	// dir is the volume's directory on the target, its replica's root.
	dir string
	// srcLog is how long the source's engine log was when the copy began.
	srcLog int
}

func (c *stepCopy) data(p string) string { return filepath.Join(c.dir, "data", p) }

// completes checks the end of a copy after the kill: complete, counted
// as the source's totals, the same tree, the export closed with the
// target's report, and the source volume no longer frozen.
func (c *stepCopy) completes(t *testing.T, want string) {
	t.Helper()
	var st map[string]any
	harness.Eventually(t, 2*time.Minute, "the copy completes", func() error {
		st = c.dst.VolumeStatus(t, c.vol)
		if st["state"] != "complete" || st["error"] != nil {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	for k, want := range map[string]int64{
		"files_total": c.tree.files, "files_copied": c.tree.files,
		"bytes_total": c.tree.bytes, "bytes_copied": c.tree.bytes,
	} {
		if got, _ := st[k].(float64); int64(got) != want {
			t.Errorf("%s = %v, the source holds %d: %v", k, st[k], want, st)
		}
	}
	ex := waitState(t, c.src, c.ctrl, "complete", time.Minute)
	report := fmt.Sprintf("%d files, %d bytes", c.tree.files, c.tree.bytes)
	if ex["report"] != report || ex["volume"] != c.vol || ex["error"] != nil {
		t.Errorf("export volume %v, want complete with report %q", ex, report)
	}
	if st := c.src.VolumeStatus(t, c.vol); st["state"] != "local" {
		t.Errorf("the source volume after its export closed: %v", st)
	}
	sameListing(t, "the volume copied across the kill", listing(t, c.dst, c.vol), want)
}

// sourceTree is what a source volume holds, read from the source host's
// disk before its export: what the target's progress is measured by.
type sourceTree struct {
	// nonFiles are the entries Skeleton makes (directories, symlinks,
	// the FIFO), each with its type.
	nonFiles map[string]fs.FileMode
	// groups are the names of each file with several.
	groups [][]string
	// large are the names of the one large file.
	large      []string
	largeInfo  fs.FileInfo
	firstChunk [md5.Size]byte
	// files and bytes count each file once, whatever its names; names
	// counts every name of a regular file.
	files, bytes int64
	names        int
}

func readSourceTree(t *testing.T, dir string) sourceTree {
	t.Helper()
	tr := sourceTree{nonFiles: map[string]fs.FileMode{}}
	names := map[uint64][]string{}
	var inodes []uint64
	var large uint64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			tr.nonFiles[rel] = fi.Mode().Type()
			return nil
		}
		ino := fi.Sys().(*syscall.Stat_t).Ino
		if names[ino] == nil {
			inodes = append(inodes, ino)
			tr.files++
			tr.bytes += fi.Size()
			if fi.Size() >= replica.LargeFile {
				tr.largeInfo, large = fi, ino
			}
		}
		names[ino] = append(names[ino], rel)
		tr.names++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tr.large = names[large]
	for _, ino := range inodes {
		if len(names[ino]) > 1 {
			tr.groups = append(tr.groups, names[ino])
		}
	}
	if tr.largeInfo == nil || len(tr.groups) < 2 || len(tr.large) < 2 {
		t.Fatalf("the source lacks a large file with two names and another hard-linked file: %+v", tr)
	}
	sum, err := md5Prefix(filepath.Join(dir, tr.large[0]), replica.ChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	tr.firstChunk = sum
	return tr
}

func md5Prefix(p string, n int64) ([md5.Size]byte, error) {
	var sum [md5.Size]byte
	f, err := os.Open(p)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// replicaFiles lists the regular files under dir, relative to it.
func replicaFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return err
	})
	return out, err
}

func isTemp(p string) bool { return strings.HasPrefix(filepath.Base(p), ".cargo-tmp-") }

// skeletonMade: every directory, symlink and the FIFO is made, and no
// file has come yet (the copy starts after Skeleton).
func skeletonMade(_ *testing.T, c *stepCopy) error {
	for p, typ := range c.tree.nonFiles {
		fi, err := os.Lstat(c.data(p))
		if err != nil {
			return err
		}
		if fi.Mode().Type() != typ {
			return fmt.Errorf("%s is a %v, not a %v", p, fi.Mode().Type(), typ)
		}
	}
	files, err := replicaFiles(c.data(""))
	if err == nil && len(files) > 0 {
		err = fmt.Errorf("files before the skeleton was done: %v", files)
	}
	return err
}

// smallWritten: a small file is written whole under its temporary name.
func smallWritten(_ *testing.T, c *stepCopy) error {
	files, err := replicaFiles(c.data(""))
	if err != nil {
		return err
	}
	for _, f := range files {
		if fi, err := os.Stat(c.data(f)); err == nil && isTemp(f) && fi.Size() > 0 {
			return nil
		}
	}
	return fmt.Errorf("no small file written yet: %v", files)
}

// smallPlaced: a small file is at its path, not all of them (the writer
// holds at its first).
func smallPlaced(_ *testing.T, c *stepCopy) error {
	files, err := replicaFiles(c.data(""))
	if err != nil {
		return err
	}
	placed := 0
	for _, f := range files {
		if !isTemp(f) && !slices.Contains(c.tree.large, f) {
			placed++
		}
	}
	if small := c.tree.names - len(c.tree.large); placed == 0 || placed == small {
		return fmt.Errorf("%d of %d small files in place", placed, small)
	}
	return nil
}

// linkPending: a file with several names is in place under one of them,
// the others not yet linked.
func linkPending(_ *testing.T, c *stepCopy) error {
	for _, g := range c.tree.groups {
		var present []fs.FileInfo
		for _, n := range g {
			if fi, err := os.Lstat(c.data(n)); err == nil {
				present = append(present, fi)
			}
		}
		if len(present) == 1 && present[0].Sys().(*syscall.Stat_t).Nlink == 1 {
			return nil
		}
	}
	return errors.New("no hard-linked file in place with its other names missing")
}

// partialPaths returns the large file's partial file and chunk log.
func (c *stepCopy) partialPaths() (file, log string, err error) {
	dir := filepath.Join(c.dir, "partial")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", "", err
	}
	for _, e := range entries {
		index, _, _ := strings.Cut(e.Name(), ".")
		if _, err := strconv.Atoi(index); err == nil {
			return filepath.Join(dir, index), filepath.Join(dir, index+".log"), nil
		}
	}
	return "", "", errors.New("no partial large file")
}

// recorded checks that a chunk log records n chunks.
func recorded(log string, n int) error {
	fi, err := os.Stat(log)
	if err != nil {
		return err
	}
	if got := (fi.Size() - int64(chunkLogHeader)) / chunkLogRecord; fi.Size() < int64(chunkLogHeader) || got != int64(n) {
		return fmt.Errorf("chunk log of %d bytes: want %d chunks recorded", fi.Size(), n)
	}
	return nil
}

// chunkWritten: the large file's first chunk is whole in its partial
// file, and no chunk is recorded.
func chunkWritten(_ *testing.T, c *stepCopy) error {
	file, log, err := c.partialPaths()
	if err != nil {
		return err
	}
	if err := recorded(log, 0); err != nil {
		return err
	}
	sum, err := md5Prefix(file, replica.ChunkSize)
	if err == nil && sum != c.tree.firstChunk {
		err = errors.New("the first chunk is not written yet")
	}
	return err
}

// journaled: every chunk recorded, the file still partial, its metadata
// set (meta) or not yet.
func journaled(meta bool) func(*testing.T, *stepCopy) error {
	return func(_ *testing.T, c *stepCopy) error {
		file, log, err := c.partialPaths()
		if err != nil {
			return err
		}
		if err := recorded(log, stepsChunks); err != nil {
			return err
		}
		fi, err := os.Stat(file)
		if err != nil {
			return err
		}
		want := c.tree.largeInfo
		set := fi.ModTime().Equal(want.ModTime()) && fi.Mode() == want.Mode()
		if set != meta {
			return fmt.Errorf("the partial file's metadata set: %v (mode %v, mtime %v)", set, fi.Mode(), fi.ModTime())
		}
		return nil
	}
}

// largeInPlace: the large file is at its paths, all linked, its chunk
// log not yet removed.
func largeInPlace(_ *testing.T, c *stepCopy) error {
	file, log, err := c.partialPaths()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(file); err == nil {
		return errors.New("the partial file is still there")
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := recorded(log, stepsChunks); err != nil {
		return err
	}
	for _, n := range c.tree.large {
		fi, err := os.Lstat(c.data(n))
		if err != nil {
			return err
		}
		if nl := fi.Sys().(*syscall.Stat_t).Nlink; int(nl) != len(c.tree.large) || fi.Size() != c.tree.largeInfo.Size() {
			return fmt.Errorf("%s: %d links, %d bytes", n, nl, fi.Size())
		}
	}
	return nil
}

// verifyPending: every file counted copied, nothing partial left, and
// the copy not yet complete.
func verifyPending(t *testing.T, c *stepCopy) error {
	if _, _, err := c.partialPaths(); err == nil {
		return errors.New("a large file is still partial")
	}
	st := c.dst.VolumeStatus(t, c.vol)
	if st["state"] != "copying" || st["files_copied"] != st["files_total"] || st["bytes_copied"] != st["bytes_total"] {
		return fmt.Errorf("status %v", st)
	}
	return nil
}

// reportReceived: the source logged the target's report of completion
// and has not recorded it; the target waits for its answer.
func reportReceived(t *testing.T, c *stepCopy) error {
	if err := c.reportPending(t); err != nil {
		return err
	}
	sc := bufio.NewScanner(strings.NewReader(c.src.EngineLog()[c.srcLog:]))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, "the target reports the copy complete") && strings.Contains(l, c.ctrl) {
			done, err := c.exportRecorded()
			if err == nil && done {
				err = errors.New("the report is recorded already")
			}
			return err
		}
	}
	return errors.New("the source has not logged the target's report")
}

// completionRecorded: the export volume's record on the source says the
// export completed; the target still waits for the source's answer.
func completionRecorded(t *testing.T, c *stepCopy) error {
	if err := c.reportPending(t); err != nil {
		return err
	}
	done, err := c.exportRecorded()
	if err == nil && !done {
		err = errors.New("the export's record has no completed_at yet")
	}
	return err
}

// reportPending: the target has everything and is not complete, as
// while it waits for the source to answer its report.
func (c *stepCopy) reportPending(t *testing.T) error {
	st := c.dst.VolumeStatus(t, c.vol)
	if st["state"] == "complete" || st["files_copied"] != st["files_total"] || st["bytes_copied"] != st["bytes_total"] {
		return fmt.Errorf("target status %v", st)
	}
	return nil
}

// exportRecorded tells whether the export volume's record on the source
// has its completion.
func (c *stepCopy) exportRecorded() (bool, error) {
	b, err := os.ReadFile(filepath.Join(stateDir(c.src), "volumes", c.ctrl, "meta.json"))
	if err != nil {
		return false, err
	}
	var r struct {
		Export struct {
			CompletedAt string `json:"completed_at"`
		} `json:"export"`
	}
	err = json.Unmarshal(b, &r)
	return r.Export.CompletedAt != "", err
}

// fillVolumes fills each of vols with fillScript's tree, its large file
// of stepsChunks chunks with a second name, in one container.
func fillVolumes(t *testing.T, h *harness.Host, vols []string) {
	t.Helper()
	var args []string
	var script strings.Builder
	script.WriteString("set -e\n")
	for i, v := range vols {
		args = append(args, "-v", fmt.Sprintf("%s:/v/%d", v, i))
		fmt.Fprintf(&script, "(%s\nln large.bin large-link)\n", inVolume(t, fillScript(stepsChunks*replica.ChunkSize>>20), i))
	}
	h.Run(t, append(args, env.Image, "sh", "-c", script.String())...)
}

// listings lists each of vols as listing does, in one container.
func listings(t *testing.T, h *harness.Host, vols []string) map[string]string {
	t.Helper()
	var args []string
	var script strings.Builder
	for i, v := range vols {
		args = append(args, "-v", fmt.Sprintf("%s:/v/%d", v, i))
		fmt.Fprintf(&script, "echo '=== %d'\n(%s)\n", i, inVolume(t, listScript, i))
	}
	out := h.Run(t, append(args, env.Image, "sh", "-c", script.String())...)
	got := map[string]string{}
	for _, part := range strings.Split(out, "=== ")[1:] {
		n, list, _ := strings.Cut(part, "\n")
		i, err := strconv.Atoi(n)
		if err != nil || i >= len(vols) {
			t.Fatalf("listing output: %q", n)
		}
		got[vols[i]] = strings.TrimSpace(list)
	}
	if len(got) != len(vols) {
		t.Fatalf("listed %d of %d volumes", len(got), len(vols))
	}
	return got
}

// inVolume makes a script written for /data work in the i-th volume of a
// container with several.
func inVolume(t *testing.T, script string, i int) string {
	t.Helper()
	if !strings.Contains(script, "cd /data") {
		t.Fatalf("the script does not start with cd /data: %s", script)
	}
	return strings.Replace(script, "cd /data", "cd /v/"+strconv.Itoa(i), 1)
}
