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
// interrupted create or remove and is swept at start-up.
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
	// Settling is set while the overlay's upper layer is merged into the
	// replica, so a crash part-way resumes the merge.
	Settling bool `json:"settling,omitempty"`
	// Settled: the volume is a plain local volume again.
	Settled bool `json:"settled,omitempty"`
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
	if err := os.RemoveAll(s.Dir(name)); err != nil {
		return fmt.Errorf("removing data of volume %q: %w", name, err)
	}
	return nil
}

// LoadResult is what Load found on disk.
type LoadResult struct {
	Volumes map[string]*Volume
	// Swept lists directories without a record that were removed.
	Swept []string
	// Repaired lists volumes whose record was unreadable and was rebuilt
	// from the directory, so their data stays reachable.
	Repaired []string
}

// Load reads every volume record, sweeps leftovers of interrupted creates
// and removes, and rebuilds unreadable records rather than losing data.
func (s *Store) Load() (*LoadResult, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "volumes"))
	if err != nil {
		return nil, fmt.Errorf("reading state directory: %w", err)
	}
	res := &LoadResult{Volumes: map[string]*Volume{}}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || names.ValidateVolume(name) != nil {
			continue // not ours: never touch what we did not create
		}
		b, err := os.ReadFile(s.metaPath(name))
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.RemoveAll(s.Dir(name)); err != nil {
				return nil, fmt.Errorf("sweeping %s: %w", s.Dir(name), err)
			}
			res.Swept = append(res.Swept, name)
			continue
		}
		v := &Volume{}
		if err == nil {
			err = json.Unmarshal(b, v)
		}
		if err != nil || v.Name != name {
			v = s.rebuild(name)
			if err := s.Save(v); err != nil {
				return nil, err
			}
			res.Repaired = append(res.Repaired, name)
		}
		res.Volumes[name] = v
	}
	return res, nil
}

func (s *Store) rebuild(name string) *Volume {
	created := time.Now().UTC()
	if fi, err := os.Stat(s.DataDir(name)); err == nil {
		created = fi.ModTime().UTC()
	}
	return &Volume{Name: name, Kind: KindLocal, CreatedAt: created}
}
