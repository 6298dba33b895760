package driver

import (
	"fmt"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/version"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// hostInfo is the reserved volume volstatus.HostInfo: `docker volume
// inspect cargo.host` shows this host's cargo facts (free space for
// volumes, the peer address) without touching any volume. The migration
// tool reads it to check the target before a move. It is never listed,
// created or mounted.
func (d *Driver) hostInfo() *volume.Volume {
	var fs unix.Statfs_t
	err := unix.Statfs(d.store.Root(), &fs)
	return &volume.Volume{Name: volstatus.HostInfo, Status: d.hostStatus(&fs, err).Map()}
}

// hostStatus is the host's facts, with the free space from a statfs of
// the state directory (or the error that statfs gave).
func (d *Driver) hostStatus(fs *unix.Statfs_t, statErr error) volstatus.Host {
	h := volstatus.Host{
		Version:     version.Version,
		Advertise:   d.cfg.Advertise,
		Fingerprint: d.cfg.Fingerprint,
	}
	if statErr != nil {
		h.Error = fmt.Sprintf("measuring free space: %v", statErr)
		return h
	}
	h.FreeBytes = int64(fs.Bavail) * int64(fs.Bsize)
	h.TotalBytes = int64(fs.Blocks) * int64(fs.Bsize)
	return h
}

func errReserved() error {
	return fmt.Errorf("volume name %q is reserved: `docker volume inspect %s` shows this host's cargo facts", volstatus.HostInfo, volstatus.HostInfo)
}

// roomFor refuses a federated volume whose copy cannot fit: better now,
// with the source still whole, than a full disk half-way.
func (d *Driver) roomFor(m *manifest.Manifest) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(d.store.Root(), &fs); err != nil {
		return nil // cannot tell; the copy reports a full disk if it comes
	}
	_, need := m.Totals()
	if free := int64(fs.Bavail) * int64(fs.Bsize); need > free {
		return fmt.Errorf("its copy needs %s but this host has %s free for volumes; free some space, then move again",
			units.BytesSize(float64(need)), units.BytesSize(float64(free)))
	}
	return nil
}
