package dircache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestCache(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := os.Symlink("/etc", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}

	var c Cache
	if _, _, err := c.Get(root, "missing"); err == nil {
		t.Fatal("opened a missing directory without Create")
	}
	if _, _, err := c.Get(root, "out"); err == nil {
		t.Fatal("followed a symlink out of the root")
	}
	c.Create = true
	d, release, err := c.Get(root, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	d2, release2, _ := c.Get(root, "a/b")
	if d != d2 {
		t.Fatal("not cached")
	}
	release()
	// Filling the cache evicts unused descriptors, never one in use.
	for i := range MaxDirs + 10 {
		_, rel, err := c.Get(root, fmt.Sprintf("d%d", i))
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}
	if _, err := d.Stat(); err != nil {
		t.Fatalf("a descriptor in use was closed: %v", err)
	}
	release2()
	if n := len(c.m); n > MaxDirs+1 {
		t.Fatalf("%d descriptors kept", n)
	}
	c.Close()
}

// Close never closes a descriptor a caller still holds: it closes on the
// last release. Get fails after Close, and Close may be called again.
func TestCloseWaitsForRelease(t *testing.T) {
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	c := Cache{Create: true}
	held, release, err := c.Get(root, "held")
	if err != nil {
		t.Fatal(err)
	}
	idle, releaseIdle, err := c.Get(root, "idle")
	if err != nil {
		t.Fatal(err)
	}
	releaseIdle()
	c.Close()
	if _, err := idle.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("an idle descriptor is still open after Close: %v", err)
	}
	if _, err := held.Stat(); err != nil {
		t.Fatalf("Close closed a descriptor in use: %v", err)
	}
	if _, _, err := c.Get(root, "held"); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	c.Close()
	release()
	if _, err := held.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("the last release did not close the descriptor: %v", err)
	}
	release() // a second release is harmless
}
