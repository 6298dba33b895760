package driver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The probe sees an overlay this process mounted and forgot, as the
// plugin after `disable -f` forgets the overlay containers still hold,
// and leaves no mark on the upper layer once the overlay is gone.
func TestUpperInUse(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting overlays needs root")
	}
	dir := t.TempDir()
	lower, upper, work, mnt := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "mnt")
	for _, d := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var m HostMounter
	if err := m.Overlay(lower, upper, work, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	inUse, err := m.UpperInUse(upper, filepath.Join(dir, "probe"))
	if err != nil || !inUse {
		t.Fatalf("with an overlay mounted: in use %v, %v", inUse, err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	inUse, err = m.UpperInUse(upper, filepath.Join(dir, "probe"))
	if err != nil || inUse {
		t.Fatalf("with no overlay: in use %v, %v", inUse, err)
	}
	if _, err := unix.Getxattr(upper, "trusted.overlay.origin", nil); !errors.Is(err, unix.ENODATA) {
		t.Fatalf("the probe left its mark on the upper layer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "probe")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the probe left its directory: %v", err)
	}
	// The driver's own overlay mounts again on the probed upper layer.
	if err := m.Overlay(lower, upper, work, mnt); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "x" {
		t.Fatalf("after the probe: %q, %v", b, err)
	}
}
