// Package dircache keeps descriptors of recently used directories, opened
// through an os.Root so they cannot lie outside it. The per-file hot paths
// (the source reading files, the target writing them) work relative to
// them, which spares walking each path from the root.
package dircache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// Cache maps directory paths (relative to the root) to open descriptors.
// The zero value is ready; Create makes missing directories (0700).
//
// A descriptor is never closed while it is handed out: one that eviction
// or Close would close stays open until its last release, so a caller's
// descriptor number cannot be reused under it by another open.
type Cache struct {
	Create bool

	mu     sync.Mutex
	m      map[string]*cachedDir
	tick   uint64
	closed bool
}

type cachedDir struct {
	f    *os.File
	refs int
	used uint64
	// dropped: no longer in m; the last release closes f.
	dropped bool
}

// MaxDirs bounds the descriptors a Cache keeps open.
const MaxDirs = 256

// Get returns a descriptor of directory p (relative to root) and a
// function to call when done with it. After Close it fails with an error
// that matches fs.ErrClosed.
func (c *Cache) Get(root *os.Root, p string) (*os.File, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, fmt.Errorf("opening directory %q: %w", p, fs.ErrClosed)
	}
	if c.m == nil {
		c.m = map[string]*cachedDir{}
	}
	c.tick++
	d, ok := c.m[p]
	if !ok {
		f, err := c.open(root, p)
		if err != nil {
			return nil, nil, err
		}
		c.evict()
		d = &cachedDir{f: f}
		c.m[p] = d
	}
	d.refs++
	d.used = c.tick
	var once sync.Once
	return d.f, func() { once.Do(func() { c.release(d) }) }, nil
}

func (c *Cache) open(root *os.Root, p string) (*os.File, error) {
	f, err := root.Open(p)
	if c.Create && errors.Is(err, fs.ErrNotExist) {
		if err := root.MkdirAll(p, 0o700); err != nil {
			return nil, err
		}
		f, err = root.Open(p)
	}
	return f, err
}

func (c *Cache) release(d *cachedDir) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.refs--
	if d.refs == 0 && d.dropped {
		_ = d.f.Close() // a read-only directory: nothing to flush
	}
}

// drop removes d from the cache, closing it now if no caller holds it and
// otherwise on its last release.
func (c *Cache) drop(p string, d *cachedDir) {
	delete(c.m, p)
	d.dropped = true
	if d.refs == 0 {
		_ = d.f.Close() // a read-only directory: nothing to flush
	}
}

// evict drops the least recently used unreferenced descriptor when the
// cache is full.
func (c *Cache) evict() {
	if len(c.m) < MaxDirs {
		return
	}
	var oldest string
	for p, d := range c.m {
		if d.refs == 0 && (oldest == "" || d.used < c.m[oldest].used) {
			oldest = p
		}
	}
	if oldest != "" {
		c.drop(oldest, c.m[oldest])
	}
}

// Close closes every descriptor: those handed out on their last release.
// Get fails afterwards. Close may be called more than once.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for p, d := range c.m {
		c.drop(p, d)
	}
}
