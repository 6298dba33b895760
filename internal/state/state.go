// Package state keeps the cargo plugin's record of its volumes on disk.
//
// Each volume lives in its own directory under the state root:
//
//	<root>/volumes/<name>/meta.json   the record below, replaced atomically
//	<root>/volumes/<name>/data/       the volume's files
//
// meta.json is the commit point: a volume exists exactly when its meta.json
// does. Create writes data/ first and meta.json last; Remove deletes
// meta.json first. A directory without meta.json is the remains of an
// interrupted create or remove: Load reports it and Sweep removes it, which
// may take long (a half-copied volume), so the plugin does it in the
// background.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/cargo-migrate/cargo/internal/atomicfile"
	"github.com/cargo-migrate/cargo/internal/names"
)

// Kind says how a volume's data is held.
type Kind string

// Kinds of volume.
const (
	// KindLocal is a plain directory on this host.
	KindLocal Kind = "local"
	// KindFederated is being copied from another host: its mount is an
	// overlay over a read-only view of the source's frozen copy.
	KindFederated Kind = "federated"
	// KindExport is not data: it stands for an open export of another
	// volume to a target host. Creating it opens the export, removing it
	// ends the export.
	KindExport Kind = "export"
)

// ExportRecord is an export volume's state.
type ExportRecord struct {
	// Volume is the volume exported.
	Volume string `json:"volume"`
	// Engine is set when Volume is a volume of the engine's local driver,
	// read through the plugin's view of the engine's volumes directory.
	// The plugin cannot freeze such a volume; the migration tool keeps its
	// container stopped.
	Engine bool   `json:"engine,omitempty"`
	ID     string `json:"id"`
	// Token is the export's credential. It is kept (not just its hash)
	// because the export volume's Status hands it to the migration tool.
	Token       string    `json:"token"`
	To          string    `json:"to,omitempty"`
	Ticket      string    `json:"ticket"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	Report      string    `json:"report,omitempty"`
}

// Open reports whether the export is still served (and, for a cargo
// volume, freezes it).
func (e *ExportRecord) Open() bool { return e.CompletedAt.IsZero() }

// FederationRecord is a federated volume's state.
type FederationRecord struct {
	// Ticket reaches the source's export (address, ID, credential,
	// certificate fingerprint).
	Ticket      string    `json:"ticket"`
	Source      string    `json:"source"`
	FilesTotal  int       `json:"files_total"`
	BytesTotal  int64     `json:"bytes_total"`
	StartedAt   time.Time `json:"started_at"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// Settling is set from the first step of settling to the last, for
	// records written before SettleStep: such a record with Settling and no
	// SettleStep is in SettleMerge.
	Settling bool `json:"settling,omitempty"`
	// SettleStep is the step of settling the volume is in, recorded before
	// the step starts, so a crash part-way redoes that step and goes on.
	SettleStep SettleStep `json:"settle_step,omitempty"`
	// SettleRoot is what the container saw of the volume's top directory
	// (the overlay's upper root), read before merging: merging changes the
	// upper root's times, so a merge that is redone cannot read them again.
	SettleRoot *DirMeta `json:"settle_root,omitempty"`
	// Settled: the volume is a plain local volume again.
	Settled bool `json:"settled,omitempty"`
}

// SettleStep is a step of turning a complete federated volume into a plain
// local one. Each step can be redone: redoing a step that was done is a
// no-op.
type SettleStep string

// The steps of settling, in order. Before the first the record has the copy
// complete and no step; after the last the volume is KindLocal and Settled.
const (
	// SettleMerge: the overlay's upper layer is merged into the replica
	// (data/), and the top directory given SettleRoot's attributes.
	SettleMerge SettleStep = "merge"
	// SettleCleanup: the merge is done; the upper and work directories, the
	// partial files and the manifest are removed.
	SettleCleanup SettleStep = "cleanup"
)

// Step is the step of settling the record is in; "" when settling has not
// begun or is over.
func (f *FederationRecord) Step() SettleStep {
	if f.SettleStep == "" && f.Settling {
		return SettleMerge
	}
	return f.SettleStep
}

// DirMeta is a directory's owner, permissions and times.
type DirMeta struct {
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Mode  uint32 `json:"mode"`     // permission and set-id bits
	Atime int64  `json:"atime_ns"` // nanoseconds since the epoch
	Mtime int64  `json:"mtime_ns"` // nanoseconds since the epoch
}

// Volume is the persisted record of one volume.
type Volume struct {
	Name      string            `json:"name"`
	Kind      Kind              `json:"kind"`
	CreatedAt time.Time         `json:"created_at"`
	Options   map[string]string `json:"options,omitempty"`
	// Mounts holds the engine's mount IDs that currently hold the volume
	// mounted. The volume is mounted exactly when this is non-empty.
	Mounts []string `json:"mounts,omitempty"`

	Export     *ExportRecord     `json:"export,omitempty"`
	Federation *FederationRecord `json:"federation,omitempty"`
}

// AddMount records id and reports whether it was new.
func (v *Volume) AddMount(id string) bool {
	if slices.Contains(v.Mounts, id) {
		return false
	}
	v.Mounts = append(v.Mounts, id)
	sort.Strings(v.Mounts)
	return true
}

// RemoveMount forgets id and reports whether it was held.
func (v *Volume) RemoveMount(id string) bool {
	i := slices.Index(v.Mounts, id)
	if i < 0 {
		return false
	}
	v.Mounts = slices.Delete(v.Mounts, i, i+1)
	return true
}

// Clone returns a deep copy, so callers can change a copy and persist it
// before making it the in-memory truth.
func (v *Volume) Clone() *Volume {
	c := *v
	c.Options = maps.Clone(v.Options)
	c.Mounts = slices.Clone(v.Mounts)
	if v.Export != nil {
		e := *v.Export
		c.Export = &e
	}
	if v.Federation != nil {
		f := *v.Federation
		if f.SettleRoot != nil {
			r := *f.SettleRoot
			f.SettleRoot = &r
		}
		c.Federation = &f
	}
	return &c
}

// Store reads and writes volume records under a root directory.
type Store struct {
	root string
}

// Open prepares the state root, creating it when missing.
func Open(root string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(root, "volumes"), 0o700); err != nil {
		return nil, fmt.Errorf("preparing state directory %s: %w", root, err)
	}
	return &Store{root: root}, nil
}

// Dir is the directory holding everything of the named volume.
func (s *Store) Dir(name string) string { return filepath.Join(s.root, "volumes", name) }

// DataDir is the directory holding the named volume's files (for a
// federated volume: its replica).
func (s *Store) DataDir(name string) string { return filepath.Join(s.Dir(name), "data") }

// UpperDir and WorkDir are a federated volume's overlay directories.
func (s *Store) UpperDir(name string) string { return filepath.Join(s.Dir(name), "upper") }

// WorkDir is the overlay's work directory, on the same filesystem as upper.
func (s *Store) WorkDir(name string) string { return filepath.Join(s.Dir(name), "work") }

// ManifestPath holds a federated volume's manifest as received.
func (s *Store) ManifestPath(name string) string { return filepath.Join(s.Dir(name), "manifest.gz") }

// Root is the state directory.
func (s *Store) Root() string { return s.root }

func (s *Store) metaPath(name string) string { return filepath.Join(s.Dir(name), "meta.json") }

// Save writes v's record atomically: a crash leaves the old or the new
// record, never a torn one.
func (s *Store) Save(v *Volume) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding volume %q: %w", v.Name, err)
	}
	if err := atomicfile.WriteFile(s.metaPath(v.Name), b, 0o600); err != nil {
		return fmt.Errorf("saving volume %q: %w", v.Name, err)
	}
	return nil
}

// Delete removes the record first (the commit point), then the data.
func (s *Store) Delete(name string) error {
	if err := os.Remove(s.metaPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing volume %q: %w", name, err)
	}
	if err := atomicfile.SyncDir(s.Dir(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing volume %q: %w", name, err)
	}
	// The data goes aside at once and is deleted later (EmptyTrash): a
	// volume of many files takes longer to delete than the engine waits
	// for an answer.
	if err := os.MkdirAll(s.trashDir(), 0o700); err != nil {
		return fmt.Errorf("removing data of volume %q: %w", name, err)
	}
	aside := filepath.Join(s.trashDir(), fmt.Sprintf("%s.%d", name, time.Now().UnixNano()))
	if err := os.Rename(s.Dir(name), aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// A directory that cannot move (a mount point): delete it here.
		if err := os.RemoveAll(s.Dir(name)); err != nil {
			return fmt.Errorf("removing data of volume %q: %w", name, err)
		}
	}
	return atomicfile.SyncDir(filepath.Join(s.root, "volumes"))
}

// trashDir holds the data of removed volumes until EmptyTrash deletes it.
func (s *Store) trashDir() string { return filepath.Join(s.root, "trash") }

// EmptyTrash deletes the data of removed volumes. It can take long; it is
// safe to stop at any point and call again.
func (s *Store) EmptyTrash() error {
	entries, err := os.ReadDir(s.trashDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the removed volumes' data: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.trashDir(), e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LoadResult is what Load found on disk.
type LoadResult struct {
	Volumes map[string]*Volume
	// Leftovers lists directories without a record: the remains of an
	// interrupted create or remove, for Sweep.
	Leftovers []string
	// Repaired lists volumes whose record was unreadable and was rebuilt
	// from the directory, so their data stays reachable.
	Repaired []string
	// Unsaved holds the volumes whose rebuilt record could not be saved,
	// with the error: they are in Volumes, but only in memory.
	Unsaved map[string]error
}

// Load reads every volume record and rebuilds unreadable ones rather than
// losing data. It fails only when the state directory cannot be read: one
// volume's trouble is reported, never fatal, so that it cannot keep the
// plugin, and every other volume, from starting.
func (s *Store) Load() (*LoadResult, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "volumes"))
	if err != nil {
		return nil, fmt.Errorf("reading state directory: %w", err)
	}
	res := &LoadResult{Volumes: map[string]*Volume{}, Unsaved: map[string]error{}}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || names.ValidateVolume(name) != nil {
			continue // not ours: never touch what we did not create
		}
		b, err := os.ReadFile(s.metaPath(name))
		if errors.Is(err, fs.ErrNotExist) {
			res.Leftovers = append(res.Leftovers, name)
			continue
		}
		v := &Volume{}
		if err == nil {
			err = json.Unmarshal(b, v)
		}
		if err != nil || v.Name != name {
			v = s.rebuild(name)
			if err := s.Save(v); err != nil {
				res.Unsaved[name] = err
			}
			res.Repaired = append(res.Repaired, name)
		}
		res.Volumes[name] = v
	}
	return res, nil
}

// Sweep removes the directory of name if it still has no record: the
// remains of an interrupted create or remove. The caller makes sure no
// create of name runs meanwhile.
func (s *Store) Sweep(name string) error {
	if err := names.ValidateVolume(name); err != nil {
		return err
	}
	if _, err := os.Lstat(s.metaPath(name)); !errors.Is(err, fs.ErrNotExist) {
		return nil // a volume again, or unreadable: not a leftover to remove
	}
	if err := os.RemoveAll(s.Dir(name)); err != nil {
		return fmt.Errorf("sweeping %s: %w", s.Dir(name), err)
	}
	return nil
}

func (s *Store) rebuild(name string) *Volume {
	created := time.Now().UTC()
	if fi, err := os.Stat(s.DataDir(name)); err == nil {
		created = fi.ModTime().UTC()
	}
	return &Volume{Name: name, Kind: KindLocal, CreatedAt: created}
}
