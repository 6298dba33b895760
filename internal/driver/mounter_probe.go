package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// upperProber is a Mounter that can ask the kernel whether an upper layer
// is in use by an overlay this process cannot see.
type upperProber interface {
	UpperInUse(upper, scratch string) (bool, error)
}

// UpperInUse asks the kernel whether an overlay anywhere on the host uses
// upper as its upper layer, even one in a mount namespace the plugin
// cannot see: after `docker plugin disable -f`, containers still hold the
// overlay the previous plugin mounted, and the new one finds nothing in
// its mount table. The kernel marks an overlay's upper layer in use, and
// refuses with EBUSY a second overlay on it that asks for index=on (with
// index=off, as the driver's overlays run, it only warns). So a read-only
// probe overlay with index=on, over an empty lower layer in scratch,
// answers: EBUSY means in use. When the probe mounts, it is unmounted at
// once, and the origin mark it left on upper's root is removed (only
// index=on reads it). scratch must be on upper's file system.
func (HostMounter) UpperInUse(upper, scratch string) (bool, error) {
	lower, work, target := filepath.Join(scratch, "lower"), filepath.Join(scratch, "work"), filepath.Join(scratch, "mnt")
	defer os.RemoveAll(scratch)
	for _, dir := range []string{lower, work, target} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,index=on,redirect_dir=off,metacopy=off,xino=off", lower, upper, work)
	err := unix.Mount("cargo-probe", target, "overlay", unix.MS_RDONLY, opts)
	if errors.Is(err, unix.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("probing whether %s is in use: %w", upper, err)
	}
	if err := unix.Unmount(target, 0); err != nil {
		return false, fmt.Errorf("unmounting the probe of %s: %w", upper, err)
	}
	if err := unix.Removexattr(upper, "trusted.overlay.origin"); err != nil && !errors.Is(err, unix.ENODATA) {
		return false, fmt.Errorf("clearing the probe's mark on %s: %w", upper, err)
	}
	return false, nil
}
