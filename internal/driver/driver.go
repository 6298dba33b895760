// Package driver implements the Docker volume plugin protocol for cargo
// volumes: creation, reference-counted mounts and removal, with every change
// persisted before it is acknowledged so that a plugin crash, a plugin
// restart or an engine restart loses neither volumes nor mounts.
package driver

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/names"
	"github.com/cargo-migrate/cargo/internal/state"
)

// Driver serves the volume plugin protocol. It is safe for concurrent use:
// the engine calls it from many goroutines.
type Driver struct {
	store    *state.Store
	mountDir string
	mnt      Mounter
	log      *slog.Logger

	mu   sync.Mutex
	vols map[string]*state.Volume
}

var _ volume.Driver = (*Driver)(nil)

// New loads the volumes from store and brings the mount table in line with
// them: volumes that hold mount references are mounted, nothing else is.
// mountDir is where mountpoints are made (the plugin's propagated mount).
func New(store *state.Store, mountDir string, mnt Mounter, log *slog.Logger) (*Driver, error) {
	if err := os.MkdirAll(mountDir, 0o755); err != nil {
		return nil, fmt.Errorf("preparing mount directory: %w", err)
	}
	res, err := store.Load()
	if err != nil {
		return nil, err
	}
	for _, n := range res.Swept {
		log.Info("swept leftovers of an interrupted create or remove", "volume", n)
	}
	for _, n := range res.Repaired {
		log.Warn("volume record was unreadable and has been rebuilt; its options are reset", "volume", n)
	}
	d := &Driver{store: store, mountDir: mountDir, mnt: mnt, log: log, vols: res.Volumes}
	if err := d.reconcile(); err != nil {
		return nil, err
	}
	return d, nil
}

// reconcile runs once at start-up, before the socket is served.
func (d *Driver) reconcile() error {
	for name, v := range d.vols {
		n, err := d.mnt.Mounts(d.mountpoint(name))
		if err != nil {
			return fmt.Errorf("checking mount of volume %q: %w", name, err)
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
		if _, ok := d.vols[e.Name()]; ok {
			continue
		}
		if err := d.detach(e.Name()); err != nil {
			return err
		}
		d.log.Info("removed stale mountpoint", "name", e.Name())
	}
	return nil
}

func (d *Driver) mountpoint(name string) string { return filepath.Join(d.mountDir, name) }

// attach makes the volume's data visible at its mountpoint.
func (d *Driver) attach(name string) error {
	mp := d.mountpoint(name)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return fmt.Errorf("creating mountpoint for volume %q: %w", name, err)
	}
	return d.mnt.Bind(d.store.DataDir(name), mp)
}

// detach unmounts every mount stacked at the mountpoint and removes it.
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
	return nil
}

func errNoSuchVolume(name string) error {
	return fmt.Errorf("no such volume: %q", name)
}

// Create makes a plain local volume. It is idempotent: creating an existing
// volume again succeeds unless different options are asked for.
func (d *Driver) Create(req *volume.CreateRequest) error {
	if err := names.ValidateVolume(req.Name); err != nil {
		return err
	}
	opts, err := parseCreateOptions(req.Options)
	if err != nil {
		return fmt.Errorf("volume %q: %w", req.Name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.vols[req.Name]; ok {
		if len(req.Options) == 0 || maps.Equal(v.Options, req.Options) {
			return nil
		}
		return fmt.Errorf("volume %q already exists with options %s; remove it first to create it with %s",
			req.Name, formatOptions(v.Options), formatOptions(req.Options))
	}
	data := d.store.DataDir(req.Name)
	if err := os.MkdirAll(filepath.Dir(data), 0o700); err != nil {
		return fmt.Errorf("creating volume %q: %w", req.Name, err)
	}
	if err := os.Mkdir(data, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating volume %q: %w", req.Name, err)
	}
	// Chown before chmod: chown clears set-id bits.
	if err := os.Chown(data, opts.UID, opts.GID); err != nil {
		return fmt.Errorf("creating volume %q: %w", req.Name, err)
	}
	if err := os.Chmod(data, fileMode(opts.Mode)); err != nil {
		return fmt.Errorf("creating volume %q: %w", req.Name, err)
	}
	v := &state.Volume{
		Name:      req.Name,
		Kind:      state.KindLocal,
		CreatedAt: time.Now().UTC().Truncate(time.Second),
		Options:   maps.Clone(req.Options),
	}
	if err := d.store.Save(v); err != nil {
		return err
	}
	d.vols[req.Name] = v
	d.log.Info("created volume", "volume", req.Name)
	return nil
}

func fileMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

func formatOptions(o map[string]string) string {
	if len(o) == 0 {
		return "(none)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(o)) {
		parts = append(parts, k+"="+o[k])
	}
	return strings.Join(parts, ",")
}

// Remove deletes the volume and its data. It refuses while the volume is
// mounted, so a running container never loses its data under it.
func (d *Driver) Remove(req *volume.RemoveRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
		return errNoSuchVolume(req.Name)
	}
	if n := len(v.Mounts); n > 0 {
		return fmt.Errorf("volume %q is in use (%d mount(s)); stop and remove the containers using it first", req.Name, n)
	}
	if err := d.detach(req.Name); err != nil {
		return err
	}
	if err := d.store.Delete(req.Name); err != nil {
		return err
	}
	delete(d.vols, req.Name)
	d.log.Info("removed volume", "volume", req.Name)
	return nil
}

// Mount makes the volume available for the engine's mount ID and returns
// where. The first reference mounts; later ones share it.
func (d *Driver) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
		return nil, errNoSuchVolume(req.Name)
	}
	mp := d.mountpoint(req.Name)
	n, err := d.mnt.Mounts(mp)
	if err != nil {
		return nil, fmt.Errorf("checking mount of volume %q: %w", req.Name, err)
	}
	mounted := n > 0
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
		d.vols[req.Name] = nv
	}
	d.log.Debug("mounted", "volume", req.Name, "id", req.ID, "refs", len(nv.Mounts))
	return &volume.MountResponse{Mountpoint: mp}, nil
}

// Unmount drops the engine's mount ID; the last reference unmounts. An
// unknown ID is not an error: the engine may repeat an Unmount after a
// restart, and it must not leave the volume stuck.
func (d *Driver) Unmount(req *volume.UnmountRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
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
		d.vols[req.Name] = nv
	}
	d.log.Debug("unmounted", "volume", req.Name, "id", req.ID, "refs", len(nv.Mounts))
	return nil
}

// Path returns where the volume is (or will be) mounted.
func (d *Driver) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.vols[req.Name]; !ok {
		return nil, errNoSuchVolume(req.Name)
	}
	return &volume.PathResponse{Mountpoint: d.mountpoint(req.Name)}, nil
}

// Get describes one volume. It never fails for a volume that exists: the
// engine forgets a volume whose Get fails.
func (d *Driver) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
		return nil, errNoSuchVolume(req.Name)
	}
	return &volume.GetResponse{Volume: d.describe(v)}, nil
}

// List describes every volume.
func (d *Driver) List() (*volume.ListResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*volume.Volume, 0, len(d.vols))
	for _, name := range slices.Sorted(maps.Keys(d.vols)) {
		out = append(out, d.describe(d.vols[name]))
	}
	return &volume.ListResponse{Volumes: out}, nil
}

func (d *Driver) describe(v *state.Volume) *volume.Volume {
	return &volume.Volume{
		Name:       v.Name,
		Mountpoint: d.mountpoint(v.Name),
		CreatedAt:  v.CreatedAt.Format(time.RFC3339),
		Status:     map[string]any{"state": string(v.Kind)},
	}
}

// Capabilities says cargo volumes are local to one engine; moving them is
// what cargo's migration does, not something the engine may assume.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}
