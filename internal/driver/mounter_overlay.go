package driver

import (
	"fmt"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// overlayOptions: no index, redirects or metacopy, so every file the
// container changed is whole in the upper layer (renaming a directory that
// came from the lower layer fails with EXDEV and mv copies it instead);
// that is what lets settling merge upper into the replica with plain
// renames. xino off: the lower is FUSE.
const overlayOptions = "index=off,redirect_dir=off,metacopy=off,xino=off"

// Overlay mounts an overlayfs at target.
func (HostMounter) Overlay(lower, upper, work, target string) error {
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", lower, upper, work, overlayOptions)
	if err := unix.Mount("cargo", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mounting overlay on %s: %w", target, err)
	}
	return nil
}

// Overlays finds the overlays on upper from the mount table: the kernel
// shows an overlay's layers in its super options as they were given when
// it was mounted, and the driver always gives the same paths.
func (HostMounter) Overlays(upper string) ([]Overlay, error) {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("overlay"))
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	var out []Overlay
	for _, m := range ms {
		opts := overlayLayers(m.VFSOptions)
		if opts["upperdir"] == upper {
			out = append(out, Overlay{Target: m.Mountpoint, Lower: opts["lowerdir"]})
		}
	}
	return out, nil
}

// overlayLayers reads lowerdir, upperdir and workdir from an overlay's
// super options. A comma in a path is escaped with a backslash; the
// driver's paths have none, and a path that has one matches nothing of
// ours.
func overlayLayers(opts string) map[string]string {
	out := map[string]string{}
	for _, o := range strings.Split(opts, ",") {
		if k, v, ok := strings.Cut(o, "="); ok && (k == "lowerdir" || k == "upperdir" || k == "workdir") {
			out[k] = v
		}
	}
	return out
}
