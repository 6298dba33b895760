package driver

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/cpuid"
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
	h := d.hostStatus(&fs, err)
	// Neither file is namespaced: the plugin reads the host's.
	h.MemAvailableBytes, h.CPUFlags = memAvailable("/proc/meminfo"), cpuFlags("/proc/cpuinfo")
	if x, ok := cpuid.ReadXSave(); ok {
		h.XSaveFeatures, h.XSaveSize, h.XSaveMaxSize = fmt.Sprintf("%#x", x.Features), int64(x.Size), int64(x.MaxSize)
	}
	return &volume.Volume{Name: volstatus.HostInfo, Status: h.Map()}
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

// memAvailable reads MemAvailable from a meminfo file, in bytes; 0 when
// it cannot.
func memAvailable(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// cpuFlags reads the first processor's flags from a cpuinfo file ("flags"
// on x86, "Features" on arm64); "" when it cannot.
func cpuFlags(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if k = strings.TrimSpace(k); ok && (k == "flags" || k == "Features") {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
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
