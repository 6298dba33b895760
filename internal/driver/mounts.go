package driver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cargo-migrate/cargo/internal/state"
)

// reconcile runs once at start-up, before the socket is served.
func (d *Driver) reconcile() error {
	for _, name := range d.names() {
		v := d.volume(name)
		n, err := d.mnt.Mounts(d.mountpoint(name))
		if err != nil {
			return fmt.Errorf("checking mount of volume %q: %w", name, err)
		}
		if v.Kind == state.KindFederated && n > 0 {
			// Its view was served by the process before this one: dead.
			// Containers still holding it recover on their restart.
			if err := d.detach(name); err != nil {
				return err
			}
			n = 0
			d.log.Warn("replaced the federated mount of a previous plugin process; restart containers using it", "volume", name)
		}
		switch want := len(v.Mounts) > 0; {
		case want && n == 0:
			// The engine unmounts everything under the plugin's directory
			// when it disables the plugin or shuts down; the containers
			// holding these references keep their own bind, or come back
			// with the engine.
			if err := d.attach(name); err != nil {
				return err
			}
			d.log.Info("re-established mount", "volume", name, "mounts", len(v.Mounts))
		case !want && n > 0:
			if err := d.detach(name); err != nil {
				return err
			}
			d.log.Info("released a mount nobody holds", "volume", name)
		}
	}
	// Mountpoints of volumes that no longer exist.
	entries, err := os.ReadDir(d.mountDir)
	if err != nil {
		return fmt.Errorf("reading mount directory: %w", err)
	}
	for _, e := range entries {
		if d.volume(e.Name()) != nil {
			continue
		}
		if err := d.detach(e.Name()); err != nil {
			return err
		}
		d.log.Info("removed stale mountpoint", "name", e.Name())
	}
	return nil
}

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
	if err := os.Remove(mp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing mountpoint of volume %q: %w", name, err)
	}
	if f := d.fed(name); f != nil {
		return f.releaseLower(d)
	}
	return nil
}
