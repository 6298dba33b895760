package driver

import (
	"fmt"

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
