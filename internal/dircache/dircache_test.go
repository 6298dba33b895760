package dircache

import (
	"fmt"
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
	os.Symlink("/etc", filepath.Join(dir, "out"))

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
