package migrate

// The image phase: the container's image copied to the target.

import (
	"archive/tar"
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

// copyImage copies the container's image to the target. On an engine
// with a classic graphdriver store, `docker load` skips layers it already
// has without reading them, so those are left out of what is sent; if
// the target still refuses the slimmer archive, the whole image goes.
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
	if skip := m.layersOnTarget(ctx, layers); len(skip) > 0 {
		st, err := m.sendImage(ctx, ref, layers, skip)
		if err == nil {
			return fmt.Sprintf("copied %s from %s: %d of %d layers sent, %d already on %s (%s not sent)",
				ref, m.src.Context, st.sent, len(layers), len(layers)-st.sent, m.dst.Context, units.BytesSize(float64(st.skippedBytes))), nil
		}
		// Fall through: the target may need every layer.
	}
	if _, err := m.sendImage(ctx, ref, layers, nil); err != nil {
		return "", err
	}
	return "copied " + ref + " from " + m.src.Context, nil
}

// graphDrivers are the classic image stores, whose load skips layers it
// has. The containerd image store does not promise that.
var graphDrivers = []string{"overlay2", "overlay", "aufs", "btrfs", "zfs", "devicemapper", "vfs", "fuse-overlayfs"}

// layersOnTarget returns the diff IDs of the longest leading run of the
// image's layers that some image on the target already has (a layer is
// only reused with the same layers below it), or nil.
func (m *mover) layersOnTarget(ctx context.Context, layers []string) map[string]bool {
	info, err := m.dst.API.Info(ctx, client.InfoOptions{})
	if err != nil || !slices.Contains(graphDrivers, info.Info.Driver) {
		return nil
	}
	for _, kv := range info.Info.DriverStatus {
		if len(kv) == 2 && kv[0] == "driver-type" && strings.Contains(kv[1], "snapshotter") {
			return nil
		}
	}
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

// blobName matches a layer in the OCI layout `docker save` writes from
// Engine 25 on, where a layer's file is named by its diff ID.
var blobName = regexp.MustCompile(`^blobs/sha256/([0-9a-f]{64})$`)

// filterSave copies a `docker save` archive, leaving out the layers
// whose diff ID is in skip; layers lists the image's diff IDs, to count
// the layers sent. From Engine 25 on, `docker save` writes an OCI layout
// where a layer's file is named by its diff ID; older engines name it by
// a v1 ID (ID/layer.tar), so those are hashed on the way.
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
				}
			} else if strings.HasSuffix(h.Name, "/layer.tar") {
				sent, err := copyUnlessSkipped(tr, tw, h, skip)
				if err != nil {
					return err
				}
				if sent {
					st.sent++
				} else {
					st.skippedBytes += h.Size
				}
				continue
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

// copyUnlessSkipped spools one layer to learn its diff ID, then writes
// it unless skip has it.
func copyUnlessSkipped(tr *tar.Reader, tw *tar.Writer, h *tar.Header, skip map[string]bool) (bool, error) {
	if len(skip) == 0 {
		if err := tw.WriteHeader(h); err != nil {
			return false, err
		}
		_, err := io.Copy(tw, tr)
		return true, err
	}
	f, err := os.CreateTemp("", "cargo-layer-*.tar")
	if err != nil {
		return false, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, sum), tr); err != nil {
		return false, err
	}
	if skip["sha256:"+hex.EncodeToString(sum.Sum(nil))] {
		return false, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	if err := tw.WriteHeader(h); err != nil {
		return false, err
	}
	_, err = io.Copy(tw, f)
	return true, err
}

// loadErrors reads an image load's JSON message stream for an error.
func loadErrors(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var msg struct {
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
	}
}
