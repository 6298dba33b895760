package driver

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/names"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/state"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// Create makes a volume: a plain local one, a federated one (from=) or an
// export volume (export=). It is idempotent: creating an existing volume
// again succeeds unless different options are asked for.
//
// A volume being created is not there yet: until Create returns, Get and
// Path answer that it is still being created (an error) and List leaves
// it out. A Docker user sees any volume that way (it exists once `docker
// volume create` returns), and the engine needs it: it calls Get before
// Create and skips Create for a volume Get returns, so a placeholder would
// let a retried create succeed with no volume behind it; and `docker
// volume ls` takes the engine's lock of every name listed, which the
// engine holds for the name being created. A second Create of the same
// name waits for the first, then answers as for an existing volume.
func (d *Driver) Create(req *volume.CreateRequest) error {
	if err := names.ValidateVolume(req.Name); err != nil {
		return err
	}
	if req.Name == volstatus.HostInfo {
		return errReserved()
	}
	kind, err := kindOf(req.Options)
	if err != nil {
		return fmt.Errorf("volume %q: %w", req.Name, err)
	}
	var unlock func()
	if kind == state.KindExport && req.Options["driver"] != "local" {
		// The exported volume is frozen by the export: it must not be
		// mounted, removed or settled while the export opens.
		d.waitRecovered(req.Name, req.Options["export"])
		unlock = d.locks.lockPair(req.Name, req.Options["export"])
	} else {
		unlock = d.locks.lock(req.Name)
	}
	defer unlock()

	d.mu.Lock()
	v := d.vols[req.Name]
	if v == nil {
		d.creating[req.Name] = true
	}
	d.mu.Unlock()
	if v != nil {
		if len(req.Options) == 0 || maps.Equal(v.Options, req.Options) {
			return nil
		}
		return fmt.Errorf("volume %q already exists with options %s; remove it first to create it with %s",
			req.Name, formatOptions(v.Options), formatOptions(req.Options))
	}
	defer func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.creating, req.Name)
	}()

	switch kind {
	case state.KindExport:
		return d.createExport(req.Name, req.Options)
	case state.KindFederated:
		return d.createFederated(req.Name, req.Options)
	case kindCheckpointExport:
		return d.createCheckpointExport(req.Name, req.Options)
	case kindCheckpoint:
		return d.createCheckpointFetch(req.Name, req.Options)
	}
	return d.createLocal(req.Name, req.Options)
}

// createLocal makes a plain local volume: its data directory, then its
// record, the commit point.
func (d *Driver) createLocal(name string, options map[string]string) error {
	opts, err := parseCreateOptions(options)
	if err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	data := d.store.DataDir(name)
	if err := os.MkdirAll(filepath.Dir(data), 0o700); err != nil {
		return fmt.Errorf("creating volume %q: %w", name, err)
	}
	if err := os.Mkdir(data, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating volume %q: %w", name, err)
	}
	// Chown before chmod: chown clears set-id bits.
	if err := os.Chown(data, opts.UID, opts.GID); err != nil {
		return fmt.Errorf("creating volume %q: %w", name, err)
	}
	if err := os.Chmod(data, manifest.PermMode(opts.Mode)); err != nil {
		return fmt.Errorf("creating volume %q: %w", name, err)
	}
	v := &state.Volume{
		Name:      name,
		Kind:      state.KindLocal,
		CreatedAt: time.Now().UTC().Truncate(time.Second),
		Options:   maps.Clone(options),
	}
	if err := d.store.Save(v); err != nil {
		return err
	}
	d.setVolume(v)
	d.log.Info("created volume", "volume", name)
	return nil
}

// formatOptions shows options in an error, the credential of a ticket
// (from=) redacted: errors reach the engine's log and the user's terminal.
func formatOptions(o map[string]string) string {
	if len(o) == 0 {
		return "(none)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(o)) {
		v := o[k]
		if k == "from" {
			v = redactTicket(v)
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

// redactTicket is a ticket without its credential, also when it does not
// parse: a mistyped ticket may still hold a real credential.
func redactTicket(s string) string {
	if t, err := peer.ParseTicket(s); err == nil {
		return t.Redacted()
	}
	rest, ok := strings.CutPrefix(s, "cargo://")
	userinfo, host, found := strings.Cut(rest, "@")
	id, _, hasToken := strings.Cut(userinfo, ":")
	if !ok || !found || !hasToken {
		return "(an unreadable ticket)"
	}
	return "cargo://" + id + ":xxxxx@" + host
}

// exportedVolume is the cargo volume an export volume's record exports,
// "" for any other record (or none).
func exportedVolume(v *state.Volume) string {
	if v == nil || v.Kind != state.KindExport || v.Export.Engine {
		return ""
	}
	return v.Export.Volume
}

// lockVolume takes name's lock and, when name is an export volume, the
// exported volume's too. It returns name's record (nil if there is none)
// and the release.
//
// It waits first for both to be recovered after the start.
func (d *Driver) lockVolume(name string) (*state.Volume, func()) {
	d.waitRecovered(name, exportedVolume(d.volume(name)))
	return d.lockVolumeNow(name)
}

// lockVolumeNow is lockVolume without waiting for recovery: for the
// recovery of an export volume itself.
func (d *Driver) lockVolumeNow(name string) (*state.Volume, func()) {
	for {
		other := exportedVolume(d.volume(name))
		var unlock func()
		if other == "" {
			unlock = d.locks.lock(name)
		} else {
			unlock = d.locks.lockPair(name, other)
		}
		v := d.volume(name)
		if exportedVolume(v) == other {
			return v, unlock
		}
		// Removed and made again while we waited: lock what it is now.
		unlock()
	}
}

// Remove deletes the volume and its data. It refuses while the volume is
// mounted, so a running container never loses its data under it.
func (d *Driver) Remove(req *volume.RemoveRequest) error {
	d.stopCheckpointFetch(req.Name)
	v, unlock := d.lockVolume(req.Name)
	defer unlock()
	if v == nil {
		return errNoSuchVolume(req.Name)
	}
	if n := len(v.Mounts); n > 0 {
		return fmt.Errorf("volume %q is in use (%d mount(s)); stop and remove the containers using it first", req.Name, n)
	}
	if ctrl := d.frozenBy(req.Name); ctrl != nil {
		return frozenError(req.Name, ctrl, "removed")
	}
	switch v.Kind {
	case state.KindExport:
		d.closeExport(req.Name)
	case state.KindFederated:
		if f := d.fed(req.Name); f != nil {
			d.setFed(req.Name, nil)
			f.stop()
		}
	case kindCheckpointExport, kindCheckpoint:
		d.closeCheckpointVolume(v)
	}
	if err := d.detach(req.Name); err != nil {
		return err
	}
	if err := d.store.Delete(req.Name); err != nil {
		return err
	}
	d.wakeTrash()
	d.deleteVolume(req.Name)
	d.log.Info("removed volume", "volume", req.Name)
	return nil
}

// Mount makes the volume available for the engine's mount ID and returns
// where. The first reference mounts; later ones share it.
//
// A volume still recovering after a restart is waited for; a failed one is
// recovered again first, and its mount fails with the reason if that
// fails again.
func (d *Driver) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	d.waitRecovered(req.Name)
	unlock := d.locks.lock(req.Name)
	defer unlock()
	v := d.volume(req.Name)
	if v == nil {
		return nil, errNoSuchVolume(req.Name)
	}
	if v.Kind == state.KindExport {
		return nil, fmt.Errorf("volume %q stands for the export of volume %q and holds no data; mount %q itself", req.Name, v.Export.Volume, v.Export.Volume)
	}
	if isCheckpointKind(v.Kind) {
		return nil, errCheckpointMount(v)
	}
	if ctrl := d.frozenBy(req.Name); ctrl != nil {
		return nil, frozenError(req.Name, ctrl, "mounted")
	}
	if err := d.retry(req.Name); err != nil {
		return nil, err
	}
	v = d.volume(req.Name)
	if len(v.Mounts) == 0 {
		// A finished copy becomes a plain volume before anyone uses it.
		if err := d.settleIfReady(req.Name); err != nil {
			return nil, err
		}
		v = d.volume(req.Name)
	}
	mp := d.mountpoint(req.Name)
	n, err := d.mnt.Mounts(mp)
	if err != nil {
		return nil, fmt.Errorf("checking mount of volume %q: %w", req.Name, err)
	}
	mounted := n > 0
	if mounted && d.stale(req.Name) {
		return nil, errPreviousMount(req.Name)
	}
	if !mounted {
		if err := d.attach(req.Name); err != nil {
			return nil, err
		}
	}
	nv := v.Clone()
	if nv.AddMount(req.ID) {
		if err := d.store.Save(nv); err != nil {
			if !mounted {
				_ = d.detach(req.Name) // leave things as they were
			}
			return nil, err
		}
		d.setVolume(nv)
	}
	d.log.Debug("mounted", "volume", req.Name, "id", req.ID, "refs", len(nv.Mounts))
	return &volume.MountResponse{Mountpoint: mp}, nil
}

// Unmount drops the engine's mount ID; the last reference unmounts. An
// unknown ID is not an error: the engine may repeat an Unmount after a
// restart, and it must not leave the volume stuck.
func (d *Driver) Unmount(req *volume.UnmountRequest) error {
	d.waitRecovered(req.Name)
	unlock := d.locks.lock(req.Name)
	defer unlock()
	v := d.volume(req.Name)
	if v == nil {
		return errNoSuchVolume(req.Name)
	}
	nv := v.Clone()
	nv.RemoveMount(req.ID)
	if len(nv.Mounts) == 0 {
		if err := d.detach(req.Name); err != nil {
			return err
		}
	}
	if len(nv.Mounts) != len(v.Mounts) {
		if err := d.store.Save(nv); err != nil {
			return err
		}
		d.setVolume(nv)
	}
	d.log.Debug("unmounted", "volume", req.Name, "id", req.ID, "refs", len(nv.Mounts))
	if len(nv.Mounts) == 0 {
		if err := d.settleIfReady(req.Name); err != nil {
			d.log.Error("settling the volume failed; it stays federated and settling is retried", "volume", req.Name, "error", err)
		}
	}
	return nil
}

// lookupLocked returns name's record or the error the engine is given for
// a volume that is not there. Called with d.mu held.
func (d *Driver) lookupLocked(name string) (*state.Volume, error) {
	if v := d.vols[name]; v != nil {
		return v, nil
	}
	if d.creating[name] {
		return nil, errCreating(name)
	}
	return nil, errNoSuchVolume(name)
}

// Path returns where the volume is (or will be) mounted.
func (d *Driver) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.lookupLocked(req.Name); err != nil {
		return nil, err
	}
	return &volume.PathResponse{Mountpoint: d.mountpoint(req.Name)}, nil
}

// Get describes one volume. It never fails for a volume that exists: the
// engine forgets a volume whose Get fails.
func (d *Driver) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	if req.Name == volstatus.HostInfo {
		return &volume.GetResponse{Volume: d.hostInfo()}, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.lookupLocked(req.Name)
	if err != nil {
		return nil, err
	}
	return &volume.GetResponse{Volume: d.describeLocked(v)}, nil
}

// List describes every volume; volumes still being created are not there
// yet (see Create).
func (d *Driver) List() (*volume.ListResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*volume.Volume, 0, len(d.vols))
	for _, name := range slices.Sorted(maps.Keys(d.vols)) {
		out = append(out, d.describeLocked(d.vols[name]))
	}
	return &volume.ListResponse{Volumes: out}, nil
}

// describeLocked is the engine's view of v. Called with d.mu held.
func (d *Driver) describeLocked(v *state.Volume) *volume.Volume {
	vol := &volume.Volume{
		Name:       v.Name,
		Mountpoint: d.mountpoint(v.Name),
		CreatedAt:  v.CreatedAt.Format(time.RFC3339),
	}
	if isCheckpointKind(v.Kind) {
		vol.Status = d.checkpointStatusLocked(v)
	} else {
		vol.Status = d.statusLocked(v).Map()
	}
	return vol
}

// Capabilities says cargo volumes are local to one engine; moving them is
// what cargo's migration does, not something the engine may assume.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}
