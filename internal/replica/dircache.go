package replica

import (
	"errors"
	"io/fs"
	"os"
	"sync"
)

// dirCache keeps descriptors of recently used replica directories, opened
// through the os.Root so they cannot lie outside it. Files are written
// relative to them, which spares walking the path once per file.
type dirCache struct {
	mu   sync.Mutex
	m    map[string]*cachedDir
	tick uint64
}

type cachedDir struct {
	f    *os.File
	refs int
	used uint64
}

const maxCachedDirs = 256

// get returns a descriptor of directory p (relative to root), creating the
// directory if a read got there before Skeleton, and a release function.
func (c *dirCache) get(root *os.Root, p string) (*os.File, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*cachedDir{}
	}
	c.tick++
	d, ok := c.m[p]
	if !ok {
		f, err := root.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
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
func (c *dirCache) evict() {
	if len(c.m) < maxCachedDirs {
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

func (c *dirCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, d := range c.m {
		d.f.Close()
		delete(c.m, p)
	}
}
