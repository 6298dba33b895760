package driver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cargo-migrate/cargo/internal/state"
)

// The mount table is brought in line with the records after a start by
// each volume's recovery (recoverVolume); attach and detach are its tools
// and Mount's.

// attach makes the volume's data visible at its mountpoint. Called with
// the volume's lock held.
func (d *Driver) attach(name string) error {
	mp := d.mountpoint(name)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return fmt.Errorf("creating mountpoint for volume %q: %w", name, err)
	}
	if d.volume(name).Kind == state.KindFederated {
		return d.attachFederated(name, mp)
	}
	return d.mnt.Bind(d.store.DataDir(name), mp)
}

// detach unmounts every mount stacked at the mountpoint and removes it.
// Called with the volume's lock held: an unmount may wait for a lazily
// detached overlay, and nothing else has to wait with it.
func (d *Driver) detach(name string) error {
	mp := d.mountpoint(name)
	n, err := d.mnt.Mounts(mp)
	if err != nil {
		return fmt.Errorf("checking mount of volume %q: %w", name, err)
	}
	for ; n > 0; n-- {
		if err := d.mnt.Unmount(mp); err != nil {
			return fmt.Errorf("volume %q: %w", name, err)
		}
	}
	// Whatever a previous process mounted there is gone from here, and
	// the engine let go of every reference to it.
	d.setStale(name, false)
	if err := os.Remove(mp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing mountpoint of volume %q: %w", name, err)
	}
	if f := d.fed(name); f != nil {
		return f.releaseLower(d)
	}
	return nil
}
