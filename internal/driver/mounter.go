package driver

import (
	"fmt"
	"os"

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
	// Mounted reports whether target is a mount point.
	Mounted(target string) (bool, error)
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

// Mounted reports whether target is a mount point.
func (HostMounter) Mounted(target string) (bool, error) {
	ok, err := mountinfo.Mounted(target)
	if err != nil && os.IsNotExist(err) {
		return false, nil
	}
	return ok, err
}
