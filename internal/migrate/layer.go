package migrate

// The layer phase: the stopped source container's changes outside its
// volumes, read into an archive; the create phase writes them into the
// target container (applyLayer).

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// layer is a stopped container's filesystem changes outside its mounts,
// read from the source and waiting to be written into the target
// container before it starts.
type layer struct {
	archive *os.File // a tar of the added and changed paths, named from /
	deleted []string
	added   int // entries in archive
	bytes   int64
}

func (l *layer) Close() {
	if l != nil && l.archive != nil {
		l.archive.Close()
		os.Remove(l.archive.Name())
	}
}

func (l *layer) String() string {
	if l.added == 0 && len(l.deleted) == 0 {
		return "no changes outside the volumes"
	}
	return fmt.Sprintf("%d path(s) added or changed (%s), %d deleted", l.added, units.BytesSize(float64(l.bytes)), len(l.deleted))
}

// layerChange is one path of a container's diff that must move.
type layerChange struct {
	Path string
	Kind container.ChangeType
	// Whole is set for an added directory: everything under it is new, so
	// it is copied in one go.
	Whole bool
}

// layerPlan picks, from a container's diff, what must be carried:
// changes under a mount (and the directories the engine made for
// mounts) are the volumes' business, and paths under an added directory
// come with it.
func layerPlan(changes []container.FilesystemChange, mountDests []string) []layerChange {
	changes = slices.Clone(changes)
	slices.SortFunc(changes, func(a, b container.FilesystemChange) int { return strings.Compare(a.Path, b.Path) })
	var out []layerChange
	var whole []string
	for _, c := range changes {
		if !mountPath(c.Path, mountDests) && !underAny(c.Path, mountDests) {
			out = append(out, layerChange{Path: c.Path, Kind: c.Kind})
		}
	}
	// A directory is copied whole when it was added, and so was
	// everything listed under it.
	for i, c := range out {
		if c.Kind != container.ChangeAdd || underAny(c.Path, whole) {
			continue
		}
		if !slices.ContainsFunc(out[i+1:], func(d layerChange) bool {
			return strings.HasPrefix(d.Path, c.Path+"/") && d.Kind != container.ChangeAdd
		}) {
			out[i].Whole = true
			whole = append(whole, c.Path)
		}
	}
	return slices.DeleteFunc(out, func(c layerChange) bool {
		return !c.Whole && underAny(c.Path, whole)
	})
}

// mountPath reports whether p is a mount destination or one of the
// directories the engine made to hold one.
func mountPath(p string, dests []string) bool {
	for _, d := range dests {
		if p == d || strings.HasPrefix(d, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// mountsOf lists a container's mounts, the --tmpfs ones included.
func mountsOf(ctr container.InspectResponse) []container.MountPoint {
	ms := slices.Clone(ctr.Mounts)
	if ctr.HostConfig != nil {
		for dst := range ctr.HostConfig.Tmpfs {
			ms = append(ms, container.MountPoint{Type: mount.TypeTmpfs, Destination: dst})
		}
	}
	return ms
}

// underAny reports whether p lies strictly under one of dirs.
func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// captureLayer is the layer phase: it keeps the source container's
// changes for the create phase.
func (m *mover) captureLayer(ctx context.Context) (string, error) {
	l, err := m.readLayer(ctx)
	if err != nil {
		return "", err
	}
	m.layer = l
	return l.String(), nil
}

// readLayer reads the stopped source container's changes into a
// temporary archive.
func (m *mover) readLayer(ctx context.Context) (*layer, error) {
	d, err := m.src.API.ContainerDiff(ctx, m.ctr.ID, client.ContainerDiffOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the changes of %s: %w", m.res.Container, err)
	}
	var dests []string
	for _, p := range mountsOf(m.ctr) {
		dests = append(dests, p.Destination)
	}
	plan := layerPlan(d.Changes, dests)
	f, err := os.CreateTemp("", "cargo-layer-*.tar")
	if err != nil {
		return nil, err
	}
	l := &layer{archive: f}
	var copies []layerChange
	for _, c := range plan {
		if c.Kind == container.ChangeDelete {
			l.deleted = append(l.deleted, c.Path)
		} else {
			copies = append(copies, c)
		}
	}
	tw := tar.NewWriter(f)
	if len(copies) > 0 {
		if m.exportCheaper(ctx, len(copies)) {
			err = m.copyFromExport(ctx, tw, l, copies)
		} else {
			err = m.copyPaths(ctx, tw, l, copies)
		}
	}
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Each archive call mounts the container's filesystem, about 0.2 s on an
// idle host; an export mounts it once but reads the whole image.
const (
	archiveCallCost = 170 * time.Millisecond
	exportRate      = 400 << 20 // bytes per second
)

// exportCheaper tells whether reading the whole filesystem once beats
// one archive call per changed path.
func (m *mover) exportCheaper(ctx context.Context, calls int) bool {
	if calls < 2 {
		return false
	}
	img, err := m.src.API.ImageInspect(ctx, m.ctr.Image)
	if err != nil {
		return false
	}
	export := archiveCallCost + time.Duration(float64(img.Size)/exportRate*float64(time.Second))
	return time.Duration(calls)*archiveCallCost > export
}

func (m *mover) copyPaths(ctx context.Context, tw *tar.Writer, l *layer, copies []layerChange) error {
	for _, c := range copies {
		n, size, err := m.copyPath(ctx, tw, c)
		if err != nil {
			return fmt.Errorf("reading %s from %s: %w", c.Path, m.res.Container, err)
		}
		l.added += n
		l.bytes += size
	}
	return nil
}

// copyFromExport reads the container's whole filesystem once and keeps
// the changed paths.
func (m *mover) copyFromExport(ctx context.Context, tw *tar.Writer, l *layer, copies []layerChange) error {
	rc, err := m.src.API.ContainerExport(ctx, m.ctr.ID, client.ContainerExportOptions{})
	if err != nil {
		return fmt.Errorf("exporting %s: %w", m.res.Container, err)
	}
	defer rc.Close()
	exact := map[string]bool{}
	var whole []string
	for _, c := range copies {
		exact[c.Path] = true
		if c.Whole {
			whole = append(whole, c.Path)
		}
	}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading the export of %s: %w", m.res.Container, err)
		}
		p := "/" + strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		if !exact[p] && !underAny(p, whole) {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		n, err := io.Copy(tw, tr)
		if err != nil {
			return err
		}
		l.added++
		l.bytes += n
	}
}

// copyPath appends one changed path (a whole tree for an added
// directory, else the entry alone) to tw, named from the root.
func (m *mover) copyPath(ctx context.Context, tw *tar.Writer, c layerChange) (entries int, size int64, err error) {
	r, err := m.src.API.CopyFromContainer(ctx, m.ctr.ID, client.CopyFromContainerOptions{SourcePath: c.Path})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return 0, 0, nil // gone since the diff: nothing to carry
		}
		return 0, 0, err
	}
	defer r.Content.Close()
	// The engine names entries from the path's base name.
	parent := strings.TrimPrefix(path.Dir(c.Path), "/")
	tr := tar.NewReader(r.Content)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, size, nil
		} else if err != nil {
			return entries, size, err
		}
		h.Name = path.Join(parent, h.Name)
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag == tar.TypeLink {
			h.Linkname = path.Join(parent, h.Linkname)
		}
		if err := tw.WriteHeader(h); err != nil {
			return entries, size, err
		}
		n, err := io.Copy(tw, tr)
		if err != nil {
			return entries, size, err
		}
		entries++
		size += n
		if !c.Whole {
			return entries, size, nil // a changed directory: its own entry only
		}
	}
}

// applyLayer writes the captured changes into the created, not yet
// started target container.
func (m *mover) applyLayer(ctx context.Context, l *layer) error {
	for _, p := range l.deleted {
		if err := m.deletePath(ctx, p); err != nil {
			return err
		}
	}
	if l.added == 0 {
		return nil
	}
	if _, err := l.archive.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := m.dst.API.CopyToContainer(ctx, m.targetID, client.CopyToContainerOptions{
		DestinationPath: "/", Content: l.archive, CopyUIDGID: true, AllowOverwriteDirWithFile: true,
	}); err != nil {
		return fmt.Errorf("writing the changed files into %s on %s: %w", m.res.Container, m.dst.Context, err)
	}
	return nil
}

// deletePath deletes p, a path of the image, in the target container.
// The API has no delete; but extracting an archive replaces what is at
// an entry's path, and a hard link to a file that does not exist then
// fails, leaving the path deleted. Whether it is gone is checked.
func (m *mover) deletePath(ctx context.Context, p string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: strings.TrimPrefix(p, "/"),
		Linkname: ".cargo-deleted-path-placeholder", Mode: 0o644}); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	_, cerr := m.dst.API.CopyToContainer(ctx, m.targetID, client.CopyToContainerOptions{
		DestinationPath: "/", Content: &buf, AllowOverwriteDirWithFile: true,
	})
	_, err := m.dst.API.ContainerStatPath(ctx, m.targetID, client.ContainerStatPathOptions{Path: p})
	switch {
	case cerrdefs.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("checking that %s is deleted in %s on %s: %w", p, m.res.Container, m.dst.Context, err)
	}
	if cerr != nil {
		return fmt.Errorf("deleting %s in %s on %s failed (%w)", p, m.res.Container, m.dst.Context, cerr)
	}
	return fmt.Errorf("deleting %s in %s on %s failed", p, m.res.Container, m.dst.Context)
}
