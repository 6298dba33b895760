// Package dircache keeps descriptors of recently used directories, opened
// through an os.Root so they cannot lie outside it. The per-file hot paths
// (the source reading files, the target writing them) work relative to
// them, which spares walking each path from the root.
package dircache

import (
	"errors"
	"io/fs"
	"os"
	"sync"
)

// Cache maps directory paths (relative to the root) to open descriptors.
// The zero value is ready; Create makes missing directories (0700).
type Cache struct {
	Create bool

	mu   sync.Mutex
	m    map[string]*cachedDir
	tick uint64
}

type cachedDir struct {
	f    *os.File
	refs int
	used uint64
}

// MaxDirs bounds the descriptors a Cache keeps open.
const MaxDirs = 256

// Get returns a descriptor of directory p (relative to root) and a
// function to call when done with it.
func (c *Cache) Get(root *os.Root, p string) (*os.File, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*cachedDir{}
	}
	c.tick++
	d, ok := c.m[p]
	if !ok {
		f, err := root.Open(p)
		if c.Create && errors.Is(err, fs.ErrNotExist) {
			if err := root.MkdirAll(p, 0o700); err != nil {
				return nil, nil, err
			}
			f, err = root.Open(p)
		}
		if err != nil {
			return nil, nil, err
		}
		c.evict()
		d = &cachedDir{f: f}
		c.m[p] = d
	}
	d.refs++
	d.used = c.tick
	return d.f, func() {
		c.mu.Lock()
		d.refs--
		c.mu.Unlock()
	}, nil
}

// evict closes the least recently used unreferenced descriptor when the
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
		c.m[oldest].f.Close()
		delete(c.m, oldest)
	}
}

// Close closes every descriptor.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, d := range c.m {
		d.f.Close()
		delete(c.m, p)
	}
}
