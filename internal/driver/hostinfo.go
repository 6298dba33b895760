package driver

import (
	"fmt"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/version"
)

// HostInfoName is a reserved volume name: `docker volume inspect
// cargo.host` shows this host's cargo facts (free space for volumes, the
// peer address) without touching any volume. The migration tool reads it
// to check the target before a move. It is never listed, created or
// mounted.
const HostInfoName = "cargo.host"

func (d *Driver) hostInfo() *volume.Volume {
	st := map[string]any{
		"version":     version.Version,
		"advertise":   d.cfg.Advertise,
		"fingerprint": d.cfg.Fingerprint,
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(d.store.Root(), &fs); err == nil {
		st["free_bytes"] = int64(fs.Bavail) * int64(fs.Bsize)
		st["total_bytes"] = int64(fs.Blocks) * int64(fs.Bsize)
	} else {
		st["error"] = fmt.Sprintf("measuring free space: %v", err)
	}
	return &volume.Volume{Name: HostInfoName, Status: st}
}

func errReserved() error {
	return fmt.Errorf("volume name %q is reserved: `docker volume inspect %s` shows this host's cargo facts", HostInfoName, HostInfoName)
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
