//go:build failpoints

package driver

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/failpoint"
)

// holdBeforePlace makes fetches wait before they place their checkpoint
// until the returned release is called; reached says when one waits.
func holdBeforePlace(t *testing.T) (reached <-chan struct{}, release func()) {
	t.Helper()
	at, gate := make(chan struct{}, 8), make(chan struct{})
	t.Cleanup(failpoint.SetFunc("driver.checkpoint.before-place", func() error {
		at <- struct{}{}
		<-gate
		return nil
	}))
	released := false
	release = func() {
		if !released {
			released = true
			close(gate)
		}
	}
	t.Cleanup(release)
	return at, release
}

func waitReached(t *testing.T, reached <-chan struct{}) {
	t.Helper()
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch did not reach its place within 10s")
	}
}

// The fetch goes on after Create returns: Status says copying until the
// checkpoint is in place, and a Remove meanwhile stops it, placing nothing.
func TestCheckpointFetchInTheBackground(t *testing.T) {
	f := newCheckpointFixture(t)
	want := f.checkpoint(t, srcCtr, "cp1")
	ckMkdir(t, filepath.Join(f.containers, dstCtr), 0o710)
	cps := filepath.Join(f.containers, dstCtr, "checkpoints")
	st := f.exportCheckpoint(t, "cp1.src", srcCtr, "cp1")
	ticket := st["ticket"].(string)
	reached, release := holdBeforePlace(t)

	opts := map[string]string{"checkpoint-from": ticket, "container": dstCtr, "checkpoint-name": "cp1"}
	ckMust(t, f.d.Create(&volume.CreateRequest{Name: "cp1.dst", Options: opts}))
	waitReached(t, reached)
	if st := checkpointStatus(t, f.d, "cp1.dst"); st["state"] != "copying" || st["files_total"] != len(want) || st["completed_at"] != nil {
		t.Fatalf("status while the fetch runs: %v", st)
	}
	removed := make(chan error, 1)
	go func() { removed <- f.d.Remove(&volume.RemoveRequest{Name: "cp1.dst"}) }()
	for ctxAlive(f.d, "cp1.dst") { // Remove stops the fetch before it is released
		time.Sleep(time.Millisecond)
	}
	release()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if got := entries(t, cps); len(got) != 0 {
		t.Fatalf("a fetch stopped by Remove left %v", got)
	}
	if _, err := f.d.Get(&volume.GetRequest{Name: "cp1.dst"}); err == nil {
		t.Fatal("the removed fetch's volume is still there")
	}

	// The same checkpoint fetched again, undisturbed, lands whole.
	if err := f.fetch(ticket, "cp1.dst", dstCtr, "cp1"); err != nil {
		t.Fatal(err)
	}
	sameCheckpoint(t, filepath.Join(cps, "cp1"), filepath.Join(f.containers, srcCtr, "checkpoints", "cp1"), want)
}

// ctxAlive tells whether name's fetch has not been told to stop yet.
func ctxAlive(d *Driver, name string) bool {
	cf := d.fetchOf(name)
	return cf != nil && cf.ctx.Err() == nil
}

// A fetch cut by the plugin's stop starts over at the next start and
// lands whole.
func TestCheckpointFetchResumesAfterRestart(t *testing.T) {
	f := newCheckpointFixture(t)
	want := f.checkpoint(t, srcCtr, "cp1")
	ckMkdir(t, filepath.Join(f.containers, dstCtr), 0o710)
	cps := filepath.Join(f.containers, dstCtr, "checkpoints")
	st := f.exportCheckpoint(t, "cp1.src", srcCtr, "cp1")
	reached, release := holdBeforePlace(t)
	opts := map[string]string{"checkpoint-from": st["ticket"].(string), "container": dstCtr, "checkpoint-name": "cp1"}
	ckMust(t, f.d.Create(&volume.CreateRequest{Name: "cp1.dst", Options: opts}))
	waitReached(t, reached)

	// Close cancels the fetch; it ends once released, placing nothing.
	closed := make(chan struct{})
	old := f.d
	go func() { old.Close(); close(closed) }()
	for ctxAlive(old, "cp1.dst") {
		time.Sleep(time.Millisecond)
	}
	release()
	<-closed
	if got := entries(t, cps); len(got) != 0 {
		t.Fatalf("a fetch stopped with the plugin left %v", got)
	}
	// The source plugin is the same driver here: serve its export again.
	f.restart(t)
	deadline := time.Now().Add(10 * time.Second)
	for checkpointStatus(t, f.d, "cp1.dst")["state"] != "complete" {
		if time.Now().After(deadline) {
			t.Fatalf("the fetch did not resume: %v", checkpointStatus(t, f.d, "cp1.dst"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	sameCheckpoint(t, filepath.Join(cps, "cp1"), filepath.Join(f.containers, srcCtr, "checkpoints", "cp1"), want)
}
