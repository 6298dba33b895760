package migrate

// The image phase: the container's image copied to the target.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
)

// image is the image phase: the target gets the container's image,
// unless it has it.
func (m *mover) image(ctx context.Context) (string, error) {
	if !m.report.ImageCopy {
		return "present on " + m.dst.Context, nil
	}
	return m.copyImage(ctx)
}

// copyImage copies the container's image to the target. `docker load`
// skips the layers it already has without reading them, on a classic
// graphdriver store (by chain ID) and on the containerd image store (a
// layer whose snapshot exists is not unpacked again, and the load lets
// blobs be missing), so those are left out of what is sent; if the
// target still refuses the slimmer archive, the whole image goes. The
// archive's manifests and configuration are sent as they are, so the
// image keeps its digest and platforms.
func (m *mover) copyImage(ctx context.Context) (string, error) {
	// Save by name when the name still means this image, so the target
	// gets the tag too; else by ID.
	ref := m.ctr.Image
	img, err := m.src.API.ImageInspect(ctx, m.ctr.Config.Image)
	if err == nil && img.ID == m.ctr.Image {
		ref = m.ctr.Config.Image
	} else if img, err = m.src.API.ImageInspect(ctx, m.ctr.Image); err != nil {
		return "", fmt.Errorf("reading image %s on %s: %w", ref, m.src.Context, err)
	}
	layers := img.RootFS.Layers
	// A containerd image store keeps an image's layers as the archive's
	// manifest names them: one from a classic store names them
	// uncompressed, which the target does not have from its own images.
	if !containerdStore(ctx, m.src) && containerdStore(ctx, m.dst) {
		if _, err := m.sendImage(ctx, ref, layers, nil); err != nil {
			return "", err
		}
		return fmt.Sprintf("copied %s from %s: all %d layers sent (%s keeps images in the containerd image store, %s in a classic one: layers it has are stored in another form there)",
			ref, m.src.Context, len(layers), m.dst.Context, m.src.Context), nil
	}
	why := ""
	if skip := m.layersOnTarget(ctx, layers); len(skip) > 0 {
		st, err := m.sendImage(ctx, ref, layers, skip)
		if err == nil && m.incompleteOnTarget(ctx, ref) {
			// The target had the layers unpacked but not their blobs
			// as the source has them: send them, so the image there is
			// whole (it can be saved and pushed).
			why = m.dst.Context + " has the other layers unpacked but not in the form " + m.src.Context + " keeps them"
		} else if err != nil {
			// The target may need every layer.
			why = m.dst.Context + " refused the image without the layers it has: " + err.Error()
		} else {
			return fmt.Sprintf("copied %s from %s: %d of %d layers sent, %d already on %s (%s not sent)",
				ref, m.src.Context, st.sent, len(layers), len(layers)-st.sent, m.dst.Context, units.BytesSize(float64(st.skippedBytes))), nil
		}
	}
	if _, err := m.sendImage(ctx, ref, layers, nil); err != nil {
		return "", err
	}
	if why != "" {
		return fmt.Sprintf("copied %s from %s: all %d layers sent (%s)", ref, m.src.Context, len(layers), why), nil
	}
	return "copied " + ref + " from " + m.src.Context, nil
}

// containerdStore tells whether e keeps its images in the containerd
// image store rather than a classic graphdriver.
func containerdStore(ctx context.Context, e Engine) bool {
	info, err := e.API.Info(ctx, client.InfoOptions{})
	if err != nil {
		return false
	}
	for _, kv := range info.Info.DriverStatus {
		if len(kv) == 2 && kv[0] == "driver-type" && strings.Contains(kv[1], "snapshotter") {
			return true
		}
	}
	return false
}

// layersOnTarget returns the diff IDs of the longest leading run of the
// image's layers that some image on the target already has (a layer is
// only reused with the same layers below it), or nil.
func (m *mover) layersOnTarget(ctx context.Context, layers []string) map[string]bool {
	l, err := m.dst.API.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return nil
	}
	best := 0
	for _, s := range l.Items {
		if best == len(layers) {
			break
		}
		insp, err := m.dst.API.ImageInspect(ctx, s.ID)
		if err != nil {
			continue
		}
		n := 0
		for n < len(layers) && n < len(insp.RootFS.Layers) && insp.RootFS.Layers[n] == layers[n] {
			n++
		}
		best = max(best, n)
	}
	skip := map[string]bool{}
	for _, d := range layers[:best] {
		// A layer that also comes higher up must be sent for that place.
		if !slices.Contains(layers[best:], d) {
			skip[d] = true
		}
	}
	return skip
}

// incompleteOnTarget tells whether the containerd image store of the
// target lacks content of the image ref that the source has: a layer
// left out is there unpacked, but its blob may differ from the source's
// (another compression) and is then missing. A classic store keeps no
// blobs, so its loaded image is whole.
func (m *mover) incompleteOnTarget(ctx context.Context, ref string) bool {
	got, err := m.dst.API.ImageInspect(ctx, ref, client.ImageInspectWithManifests(true))
	if err != nil || got.Descriptor == nil {
		return false
	}
	var want map[string]bool
	if src, err := m.src.API.ImageInspect(ctx, ref, client.ImageInspectWithManifests(true)); err == nil && len(src.Manifests) > 0 {
		want = map[string]bool{}
		for _, mf := range src.Manifests {
			if mf.Available {
				want[mf.ID] = true
			}
		}
	}
	for _, mf := range got.Manifests {
		if mf.Kind == image.ManifestKindImage && (want == nil || want[mf.ID]) && !mf.Available {
			return true
		}
	}
	return false
}

// targetImage returns the reference the target container is created
// from: the container's image name when it means the source's image on
// the target too, else that image's ID there, so that a target with
// another image under the same name does not run its own.
func (m *mover) targetImage(ctx context.Context) string {
	name := m.ctr.Config.Image
	want, err := m.src.API.ImageInspect(ctx, m.ctr.Image)
	if err != nil {
		return name
	}
	if got, err := m.dst.API.ImageInspect(ctx, name); err == nil && sameImage(want.InspectResponse, got.InspectResponse) {
		return name
	}
	if got, err := m.dst.API.ImageInspect(ctx, m.ctr.Image); err == nil && sameImage(want.InspectResponse, got.InspectResponse) {
		return got.ID
	}
	// Between the two image stores an image has two IDs: look for it.
	l, err := m.dst.API.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return name
	}
	for _, s := range l.Items {
		if got, err := m.dst.API.ImageInspect(ctx, s.ID); err == nil && sameImage(want.InspectResponse, got.InspectResponse) {
			return got.ID
		}
	}
	return name
}

// sameImage tells whether two engines' images are one. In one kind of
// store the ID says it: the configuration's digest on a classic store,
// the manifest's or index's on the containerd store. Across the two,
// the layers, creation time and platform do.
func sameImage(a, b image.InspectResponse) bool {
	if a.ID == b.ID {
		return true
	}
	if (a.Descriptor == nil) == (b.Descriptor == nil) {
		return false
	}
	return slices.Equal(a.RootFS.Layers, b.RootFS.Layers) && a.Created == b.Created &&
		a.Os == b.Os && a.Architecture == b.Architecture && a.Variant == b.Variant
}

type sendStats struct {
	sent         int
	skippedBytes int64
}

// sendImage streams `docker save` from the source into `docker load` on
// the target, leaving out the layers in skip.
func (m *mover) sendImage(ctx context.Context, ref string, layers []string, skip map[string]bool) (sendStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, err := m.src.API.ImageSave(ctx, []string{ref})
	if err != nil {
		return sendStats{}, fmt.Errorf("saving image %s on %s: %w", ref, m.src.Context, err)
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	var st sendStats
	done := make(chan error, 1)
	go func() {
		err := filterSave(rc, pw, layers, skip, &st)
		pw.CloseWithError(err)
		done <- err
	}()
	resp, err := m.dst.API.ImageLoad(ctx, pr)
	if err == nil {
		err = loadErrors(resp)
		resp.Close()
	}
	pr.CloseWithError(errors.New("load ended"))
	ferr := <-done
	if err != nil {
		return st, fmt.Errorf("loading image %s on %s: %w", ref, m.dst.Context, err)
	}
	if ferr != nil {
		return st, fmt.Errorf("reading image %s from %s: %w", ref, m.src.Context, ferr)
	}
	return st, nil
}

// blobName matches a file of the OCI layout `docker save` writes from
// Engine 25 on. On a classic store a layer is stored uncompressed, so its
// file is named by its diff ID; on the containerd image store it is kept
// as pulled or built, mostly gzip-compressed, and named by that digest.
var blobName = regexp.MustCompile(`^blobs/sha256/([0-9a-f]{64})$`)

// gzipMagic starts every gzip stream.
var gzipMagic = []byte{0x1f, 0x8b}

// filterSave copies a `docker save` archive, leaving out the layers
// whose diff ID is in skip; layers lists the image's diff IDs, to count
// the layers sent. A blob named by a diff ID is a plain layer; a
// gzip-compressed one is decompressed on the way to learn its diff ID.
// Older engines name a layer by a v1 ID (ID/layer.tar), so those are
// hashed on the way.
func filterSave(r io.Reader, w io.Writer, layers []string, skip map[string]bool, st *sendStats) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		} else if err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if mm := blobName.FindStringSubmatch(h.Name); mm != nil {
				diffID := "sha256:" + mm[1]
				if skip[diffID] {
					st.skippedBytes += h.Size
					continue
				}
				if slices.Contains(layers, diffID) {
					st.sent++
				} else if len(skip) > 0 {
					br := bufio.NewReader(tr)
					if magic, _ := br.Peek(len(gzipMagic)); bytes.Equal(magic, gzipMagic) {
						diffID, written, err := copyUnlessSkipped(br, tw, h, skip, true)
						if err != nil {
							return err
						}
						if !written {
							st.skippedBytes += h.Size
						} else if slices.Contains(layers, diffID) {
							st.sent++
						}
						continue
					}
					if err := writeEntry(tw, h, br); err != nil {
						return err
					}
					continue
				}
			} else if strings.HasSuffix(h.Name, "/layer.tar") {
				_, written, err := copyUnlessSkipped(tr, tw, h, skip, false)
				if err != nil {
					return err
				}
				if written {
					st.sent++
				} else {
					st.skippedBytes += h.Size
				}
				continue
			}
		}
		if err := writeEntry(tw, h, tr); err != nil {
			return err
		}
	}
}

func writeEntry(tw *tar.Writer, h *tar.Header, r io.Reader) error {
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := io.Copy(tw, r)
	return err
}

// copyUnlessSkipped spools one layer to learn its diff ID (the digest of
// its uncompressed bytes: of the gzip stream's content when gzipped),
// then writes it unless skip has it. It returns the diff ID, empty when
// a blob that looked gzipped was not one gzip stream (it is sent).
func copyUnlessSkipped(r io.Reader, tw *tar.Writer, h *tar.Header, skip map[string]bool, gzipped bool) (string, bool, error) {
	if len(skip) == 0 {
		return "", true, writeEntry(tw, h, r)
	}
	f, err := os.CreateTemp("", "cargo-layer-*.tar")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sum := sha256.New()
	named := true
	if gzipped {
		named, err = spoolGunzipped(r, f, sum)
	} else {
		_, err = io.Copy(io.MultiWriter(f, sum), r)
	}
	if err != nil {
		return "", false, err
	}
	var diffID string
	if named {
		diffID = "sha256:" + hex.EncodeToString(sum.Sum(nil))
		if skip[diffID] {
			return diffID, false, nil
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return diffID, false, err
	}
	return diffID, true, writeEntry(tw, h, f)
}

// spoolGunzipped copies r to f and its decompressed bytes to sum; it
// tells whether r was one whole gzip stream.
func spoolGunzipped(r io.Reader, f io.Writer, sum io.Writer) (bool, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		zr, err := gzip.NewReader(pr)
		if err == nil {
			_, err = io.Copy(sum, zr)
		}
		// Whatever follows, or all of a blob that is not gzip, is read
		// so that the copy to f goes on.
		_, _ = io.Copy(io.Discard, pr)
		done <- err
	}()
	_, err := io.Copy(io.MultiWriter(f, pw), r)
	pw.CloseWithError(err)
	zerr := <-done
	return zerr == nil, err
}

// loadErrors reads an image load's JSON message stream for an error.
// The containerd image store reports an image it imported but could not
// unpack (a layer left out that it lacks after all) as a plain message.
func loadErrors(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Stream      string
			Error       string
			ErrorDetail struct{ Message string }
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
		if strings.HasPrefix(msg.Stream, "Error unpacking image") {
			return errors.New(strings.TrimSpace(msg.Stream))
		}
	}
}
