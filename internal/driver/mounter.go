package driver

import (
	"fmt"

	"github.com/moby/sys/mount"
	"github.com/moby/sys/mountinfo"
)

// Mounter is what the driver needs from the kernel's mount table; a small
// interface so the driver's bookkeeping can be unit-tested without mounts.
type Mounter interface {
	// Bind makes source visible at target (which exists).
	Bind(source, target string) error
	// Unmount detaches target; a target that is not mounted is no error.
	Unmount(target string) error
	// Overlay mounts an overlayfs of lower and upper at target.
	Overlay(lower, upper, work, target string) error
	// Mounts counts the mounts at target (0: not a mount point). One is
	// expected; detach removes however many there are, so a volume is
	// never left half-mounted.
	Mounts(target string) (int, error)
	// Overlays lists the overlays mounted anywhere in this mount namespace
	// whose upper layer is upper.
	Overlays(upper string) ([]Overlay, error)
}

// Overlay is an overlayfs in the mount table.
type Overlay struct {
	Target string // where it is mounted
	Lower  string // its lower layer, as it was mounted
}

// HostMounter acts on the real mount table.
type HostMounter struct{}

// Bind bind-mounts source onto target. Mounts are made in the plugin's
// propagated mount, so the engine's mount namespace sees them too.
func (HostMounter) Bind(source, target string) error {
	if err := mount.Mount(source, target, "none", "bind"); err != nil {
		return fmt.Errorf("bind-mounting %s on %s: %w", source, target, err)
	}
	return nil
}

// Unmount detaches target. moby/sys/mount detaches lazily, so a reader
// still inside the volume cannot wedge the plugin.
func (HostMounter) Unmount(target string) error {
	if err := mount.Unmount(target); err != nil {
		return fmt.Errorf("unmounting %s: %w", target, err)
	}
	return nil
}

// Mounts counts the mounts stacked at target.
func (HostMounter) Mounts(target string) (int, error) {
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.Mountpoint != target, false
	})
	if err != nil {
		return 0, fmt.Errorf("reading mount table: %w", err)
	}
	return len(ms), nil
}
