// Package export serves frozen volumes to the hosts they move to. An
// export is opened for one volume and one target; the peer service finds
// it by ID and checks the target's credential before anything is read.
package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/dircache"
	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/peer"
)

// Export is one volume opened for one target.
type Export struct {
	ID        string
	tokenHash [32]byte
	root      *os.Root
	m         *manifest.Manifest
	encoded   []byte
	// onComplete is called once when the target reports the copy done.
	onComplete func(report string) error
	mu         sync.Mutex
	completed  bool

	dirs dircache.Cache

	walkTook, encodeTook time.Duration
}

// Open walks the tree under dir into a manifest and prepares to serve it.
// The tree must not change while the export is open: the caller freezes
// the volume first. Walking is deterministic, so reopening the same frozen
// tree after a restart gives every entry the same index.
func Open(ctx context.Context, id, token, dir string, onComplete func(report string) error) (*Export, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening volume for export: %w", err)
	}
	began := time.Now()
	m, err := manifest.Walk(ctx, root)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("reading the volume's tree: %w", err)
	}
	walked := time.Now()
	if err := checkMovable(m); err != nil {
		root.Close()
		return nil, err
	}
	var buf bytes.Buffer
	if err := manifest.Encode(&buf, m); err != nil {
		root.Close()
		return nil, err
	}
	return &Export{ID: id, tokenHash: peer.HashToken(token), root: root, m: m, encoded: buf.Bytes(), onComplete: onComplete,
		walkTook: walked.Sub(began), encodeTook: time.Since(walked)}, nil
}

// Took is how long Open spent walking the tree, and checking and encoding
// its manifest: the walk is most of a large volume's downtime.
func (e *Export) Took() (walk, encode time.Duration) { return e.walkTook, e.encodeTook }

// targetLimits is what a target's plugin accepts; tests shrink it.
var targetLimits = manifest.DefaultLimits

// checkMovable refuses, now rather than on the target, a tree the target
// would refuse: one over the limits a target puts on a manifest.
func checkMovable(m *manifest.Manifest) error {
	err := m.Validate(targetLimits)
	var le *manifest.LimitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &le):
		return fmt.Errorf("the volume is too large to move by federation: %s is over the limit of %d that a target accepts (%s)",
			le.What, le.Max, le.Limit)
	}
	return fmt.Errorf("the volume's tree: %w", err)
}

// Totals is what the target will copy.
func (e *Export) Totals() (files int, bytes int64) { return e.m.Totals() }

// Close releases the export's files.
func (e *Export) Close() error {
	e.dirs.Close()
	return e.root.Close()
}

// TokenHash implements peer.Export.
func (e *Export) TokenHash() [32]byte { return e.tokenHash }

// WriteManifest implements peer.Export.
func (e *Export) WriteManifest(_ context.Context, w io.Writer) error {
	_, err := w.Write(e.encoded)
	return err
}

// Open implements peer.Export: the target names files by manifest index,
// never by path, and the file is opened beneath the volume's root, which
// no symlink or ".." can leave.
func (e *Export) Open(_ context.Context, index int) (peer.File, error) {
	if index < 0 || index >= len(e.m.Entries) {
		return nil, fmt.Errorf("no entry %d", index)
	}
	ent := &e.m.Entries[index]
	if ent.Type != manifest.TypeFile {
		return nil, fmt.Errorf("entry %d is not a regular file", index)
	}
	f, err := e.openFile(ent.Path)
	if err != nil {
		return nil, fmt.Errorf("opening %q: %w", ent.Path, err)
	}
	fi, err := f.Stat()
	if err == nil && (!fi.Mode().IsRegular() || fi.Size() != ent.Size) {
		err = fmt.Errorf("%q changed while exported (%v, %d bytes; the manifest says %d)", ent.Path, fi.Mode().Type(), fi.Size(), ent.Size)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return file{f, ent.Size}, nil
}

// openFile opens a regular file relative to its directory's cached
// descriptor (which came through the os.Root), without following a
// symlink in the last component.
func (e *Export) openFile(p string) (*os.File, error) {
	dir, base := path.Split(p)
	name := strings.TrimSuffix(dir, "/")
	if name == "" {
		name = "."
	}
	d, release, err := e.dirs.Get(e.root, name)
	if err != nil {
		return nil, err
	}
	defer release()
	fd, err := unix.Openat(int(d.Fd()), base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

type file struct {
	*os.File
	size int64
}

func (f file) Size() int64 { return f.size }

// Complete implements peer.Export. Clients retry, so a repeated report
// succeeds, and a failed one runs again.
func (e *Export) Complete(_ context.Context, report string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.completed {
		return nil
	}
	if err := e.onComplete(report); err != nil {
		return err
	}
	e.completed = true
	return nil
}

var _ peer.Export = (*Export)(nil)
