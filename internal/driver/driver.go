// Package driver implements the Docker volume plugin protocol for cargo
// volumes: creation, reference-counted mounts and removal, with every change
// persisted before it is acknowledged so that a plugin crash, a plugin
// restart or an engine restart loses neither volumes nor mounts.
package driver

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/export"
	"github.com/cargo-migrate/cargo/internal/lazyfs"
	"github.com/cargo-migrate/cargo/internal/state"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// Driver serves the volume plugin protocol. It is safe for concurrent use:
// the engine calls it from many goroutines.
//
// Locking follows moby's local driver. Each volume has its own lock
// (locks), held for the whole of an operation on that volume, slow parts
// included: fetching a manifest from the peer, walking a tree for an
// export, settling, unmounting, recovering after a restart. Operations on
// one volume are serialized; they never wait for another volume's. An
// operation on two volumes (an export volume and the cargo volume it
// exports) takes both locks at once, in name order (lockVolume,
// volumeLocks.lockPair). mu guards the maps below and is held only to read
// or replace an entry, never across I/O and never while waiting for a
// volume lock, so Get, List and Path answer at once whatever else runs.
//
// A volume's record in vols, its federation in feds and the exports of
// it change only under that volume's lock; records are never changed in
// place: a changed copy is saved, then replaces the old one.
type Driver struct {
	store    *state.Store
	mountDir string
	runDir   string
	mnt      Mounter
	log      *slog.Logger
	cfg      Config

	locks volumeLocks
	// ctx ends when Close begins; background work checks it.
	ctx    context.Context
	cancel context.CancelFunc
	// recovery counts the recovery goroutines, copies the copy goroutines;
	// Close waits for both.
	recovery, copies sync.WaitGroup
	// recovered is closed once every volume has been through its recovery,
	// exportsServed once every open export is served again (or failed).
	recovered, exportsServed chan struct{}

	mu   sync.Mutex
	vols map[string]*state.Volume
	// creating holds the names whose Create runs; see Create.
	creating map[string]bool
	// feds holds the running copies of federated volumes not yet settled.
	feds map[string]*federation
	// exports holds open exports by export volume name.
	exports map[string]*openExport
	// fetches holds the checkpoint fetches running in the background.
	fetches map[string]*checkpointFetch
	// recovering holds, for each volume not yet recovered after the start,
	// a channel closed once it is: operations on it wait for that.
	recovering map[string]chan struct{}
	// failed holds the volumes whose recovery, or settling, failed: they
	// show the error and are retried on their next mount; nothing else
	// waits for them.
	failed map[string]*failure
	// staleMounts holds the federated volumes whose mountpoint still holds the
	// overlay a previous plugin process mounted, which containers use: no
	// other overlay may be mounted on its upper layer until they let go.
	staleMounts map[string]bool
	// trash wakes the goroutine that deletes removed volumes' data.
	trash chan struct{}
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
	// EngineContainers is the engine's containers directory, for carrying
	// a container's checkpoint (ID/checkpoints/NAME, and nothing else of
	// it) between hosts; "" disables checkpoints.
	EngineContainers string
	// Passthrough lets the kernel read local files of a federated view
	// directly.
	Passthrough bool
	// Keeper keeps the FUSE connections of federated views across a
	// crash of this process (the plugin's holder); nil: they end with
	// it.
	Keeper lazyfs.Keeper
}

var _ volume.Driver = (*Driver)(nil)

// New loads the volume records and returns at once: the plugin must
// answer the engine within a second of its start, however many volumes
// and files it holds. Everything slow happens afterwards in the background,
// volume by volume (see recovery.go): resuming copies and settles,
// bringing the mount table in line with the records, serving open exports
// again. A volume that cannot be recovered is failed alone (its Status
// says why and what to do); New fails only when the state directory
// itself cannot be read.
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
	for _, n := range res.Repaired {
		log.Warn("volume record was unreadable and has been rebuilt; its options are reset", "volume", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{store: store, mountDir: cfg.MountDir, runDir: cfg.RunDir, mnt: cfg.Mounter, log: log, cfg: cfg,
		ctx: ctx, cancel: cancel, recovered: make(chan struct{}), exportsServed: make(chan struct{}),
		vols: res.Volumes, creating: map[string]bool{}, feds: map[string]*federation{}, exports: map[string]*openExport{},
		recovering: map[string]chan struct{}{}, failed: map[string]*failure{}, fetches: map[string]*checkpointFetch{}, staleMounts: map[string]bool{},
		trash: make(chan struct{}, 1)}
	for n, err := range res.Unsaved {
		d.fail(n, failSave, err)
	}
	d.startRecovery(res.Leftovers)
	d.copies.Add(1)
	go d.emptyTrash()
	d.wakeTrash() // what a previous process left
	return d, nil
}

// emptyTrash deletes removed volumes' data in the background, so that
// Remove answers at once however many files a volume holds.
func (d *Driver) emptyTrash() {
	defer d.copies.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.trash:
		}
		if err := d.store.EmptyTrash(); err != nil {
			d.log.Error("deleting the data of removed volumes; retried at the next remove or start", "error", err)
		}
	}
}

func (d *Driver) wakeTrash() {
	select {
	case d.trash <- struct{}{}:
	default: // already woken
	}
}

// Recovered is closed once every volume has been recovered after the start
// (or failed).
func (d *Driver) Recovered() <-chan struct{} { return d.recovered }

// ExportsServed is closed once every export that was open when the plugin
// stopped is served again (or failed). The peer service listens only then:
// a target asking for an export not yet served again would be told it is
// gone, which ends its copy.
func (d *Driver) ExportsServed() <-chan struct{} { return d.exportsServed }

// Close stops background work, copies and exports as the plugin exits,
// and waits for the goroutines the driver started. Mounts are left alone:
// a FUSE view cannot be unmounted under an overlay a container still uses
// (the unmount would wait for the container), and the process's exit ends
// it anyway; the next start reconciles.
func (d *Driver) Close() {
	d.cancel()
	d.recovery.Wait()
	d.mu.Lock()
	feds := slices.Collect(maps.Values(d.feds))
	exps := slices.Collect(maps.Values(d.exports))
	d.mu.Unlock()
	for _, f := range feds {
		f.cancel()
		f.cop.Close()
	}
	for _, e := range exps {
		if e.exp != nil {
			d.cfg.Exports.Remove(e.exp.ID)
		}
	}
	d.copies.Wait()
}

func (d *Driver) mountpoint(name string) string { return filepath.Join(d.mountDir, name) }

// volume returns name's record, nil if there is none.
func (d *Driver) volume(name string) *state.Volume {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vols[name]
}

// setVolume makes v, already saved, the volume's record.
func (d *Driver) setVolume(v *state.Volume) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.vols[v.Name] = v
}

func (d *Driver) deleteVolume(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.vols, name)
	delete(d.failed, name)
	delete(d.staleMounts, name)
}

// names returns the names of the volumes, sorted.
func (d *Driver) names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.vols))
}

// fed returns the running copy of a federated volume, nil if none runs.
func (d *Driver) fed(name string) *federation {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.feds[name]
}

// setFed records name's running copy; nil forgets it.
func (d *Driver) setFed(name string, f *federation) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f == nil {
		delete(d.feds, name)
		return
	}
	d.feds[name] = f
}

// openExportOf returns the export served for export volume ctrl, or nil.
func (d *Driver) openExportOf(ctrl string) *openExport {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exports[ctrl]
}

// setOpenExport records the export served for ctrl; nil forgets it.
func (d *Driver) setOpenExport(ctrl string, oe *openExport) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if oe == nil {
		delete(d.exports, ctrl)
		return
	}
	d.exports[ctrl] = oe
}

func errNoSuchVolume(name string) error {
	if name == volstatus.HostInfo {
		return errReserved()
	}
	return fmt.Errorf("no such volume: %q", name)
}

func errCreating(name string) error {
	return fmt.Errorf("volume %q is still being created", name)
}
