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

	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/names"
	"github.com/cargo-migrate/cargo/internal/state"
)

// Driver serves the volume plugin protocol. It is safe for concurrent use:
// the engine calls it from many goroutines.
type Driver struct {
	store    *state.Store
	mountDir string
	runDir   string
	mnt      Mounter
	log      *slog.Logger
	cfg      Config

	mu   sync.Mutex
	vols map[string]*state.Volume
	// feds holds the running copies of federated volumes not yet settled.
	feds map[string]*federation
	// exports holds open exports by export volume name.
	exports map[string]*openExport
}

// Config is what the driver is built from.
type Config struct {
	Store *state.Store
	// MountDir is where mountpoints are made (the plugin's propagated
	// mount); RunDir holds the plugin's private mounts (FUSE views).
	MountDir, RunDir string
	Mounter          Mounter
	Log              *slog.Logger
	// Exports is the peer service's registry; nil disables exports.
	Exports *export.Registry
	// Advertise and Fingerprint are how targets reach and verify this
	// host's peer service; they go into export tickets.
	Advertise, Fingerprint string
	// EngineVolumes is the engine's volumes directory (read only), for
	// exports of local-driver volumes; "" disables them.
	EngineVolumes string
	// Passthrough lets the kernel read local files of a federated view
	// directly.
	Passthrough bool
}

var _ volume.Driver = (*Driver)(nil)

// New loads the volumes from the store and brings the mount table in line
// with them: volumes that hold mount references are mounted, nothing else
// is; open exports are served again and unfinished copies resume.
func New(cfg Config) (*Driver, error) {
	store, log := cfg.Store, cfg.Log
	for _, dir := range []string{cfg.MountDir, cfg.RunDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("preparing %s: %w", dir, err)
		}
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
	d := &Driver{store: store, mountDir: cfg.MountDir, runDir: cfg.RunDir, mnt: cfg.Mounter, log: log, cfg: cfg,
		vols: res.Volumes, feds: map[string]*federation{}, exports: map[string]*openExport{}}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.resume(); err != nil {
		return nil, err
	}
	if err := d.reconcile(); err != nil {
		return nil, err
	}
	return d, nil
}

// Close stops background copies and exports as the plugin exits.
// Mounts are left alone: a FUSE view cannot be unmounted under an overlay
// a container still uses (the unmount would wait for the container), and
// the process's exit ends it anyway; the next start reconciles.
func (d *Driver) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.feds {
		f.cancel()
		f.cop.Close()
	}
	for _, e := range d.exports {
		if e.exp != nil {
			d.cfg.Exports.Remove(e.exp.ID)
		}
	}
}

// reconcile runs once at start-up, before the socket is served.
func (d *Driver) reconcile() error {
	for name, v := range d.vols {
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
	if d.vols[name].Kind == state.KindFederated {
		return d.attachFederated(name, mp)
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
	if f := d.feds[name]; f != nil {
		return f.releaseLower(d)
	}
	return nil
}

func errNoSuchVolume(name string) error {
	if name == HostInfoName {
		return errReserved()
	}
	return fmt.Errorf("no such volume: %q", name)
}

// Create makes a plain local volume. It is idempotent: creating an existing
// volume again succeeds unless different options are asked for.
func (d *Driver) Create(req *volume.CreateRequest) error {
	if err := names.ValidateVolume(req.Name); err != nil {
		return err
	}
	if req.Name == HostInfoName {
		return errReserved()
	}
	kind, err := kindOf(req.Options)
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
	switch kind {
	case state.KindExport:
		return d.createExport(req.Name, req.Options)
	case state.KindFederated:
		return d.createFederated(req.Name, req.Options)
	}
	opts, err := parseCreateOptions(req.Options)
	if err != nil {
		return fmt.Errorf("volume %q: %w", req.Name, err)
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
	if err := os.Chmod(data, manifest.PermMode(opts.Mode)); err != nil {
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
	if ctrl := d.exportOf(req.Name); ctrl != "" {
		return d.frozenError(req.Name, ctrl, "removed")
	}
	switch v.Kind {
	case state.KindExport:
		d.closeExport(req.Name)
	case state.KindFederated:
		if f := d.feds[req.Name]; f != nil {
			f.stop()
			delete(d.feds, req.Name)
		}
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
	if v.Kind == state.KindExport {
		return nil, fmt.Errorf("volume %q stands for the export of volume %q and holds no data; mount %q itself", req.Name, v.Export.Volume, v.Export.Volume)
	}
	if ctrl := d.exportOf(req.Name); ctrl != "" {
		return nil, d.frozenError(req.Name, ctrl, "mounted")
	}
	if len(v.Mounts) == 0 {
		// A finished copy becomes a plain volume before anyone uses it.
		if err := d.settleIfReady(req.Name); err != nil {
			return nil, err
		}
		v = d.vols[req.Name]
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
	if len(nv.Mounts) == 0 {
		if err := d.settleIfReady(req.Name); err != nil {
			d.log.Error("settling the volume failed; it stays federated and settling is retried", "volume", req.Name, "error", err)
		}
	}
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
	if req.Name == HostInfoName {
		return &volume.GetResponse{Volume: d.hostInfo()}, nil
	}
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
		Status:     d.status(v),
	}
}

// Capabilities says cargo volumes are local to one engine; moving them is
// what cargo's migration does, not something the engine may assume.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}
