package driver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/cargo-migrate/cargo/internal/copier"
	"github.com/cargo-migrate/cargo/internal/lazyfs"
	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/replica"
	"github.com/cargo-migrate/cargo/internal/state"
)

// federation is the running copy of one federated volume.
type federation struct {
	name   string
	m      *manifest.Manifest
	rep    *replica.Replica
	client *peer.Client // on-demand reads, HTTP/2
	bulk   *peer.Client // the background copy, HTTP/1.1
	cop    *copier.Copier
	cancel context.CancelFunc
	// lower is the FUSE view of the source tree, mounted while a
	// mountpoint or an export view uses it.
	lower *lazyfs.FS
	view  string
}

// permanent tells the copier which errors retrying cannot mend.
func permanent(err error) bool {
	return errors.Is(err, peer.ErrUnauthorized) || errors.Is(err, peer.ErrExportGone) ||
		errors.Is(err, peer.ErrFingerprintMismatch)
}

// createFederated makes a volume whose content comes from another host's
// export: the manifest now, the files on demand and in the background.
func (d *Driver) createFederated(name string, opts map[string]string) (retErr error) {
	t, err := peer.ParseTicket(opts["from"])
	if err != nil {
		return fmt.Errorf("volume %q: option from: %w", name, err)
	}
	client, err := peer.NewClient(t, peer.ClientOptions{RetryMax: 3, Logger: d.log})
	if err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			client.Close()
			os.RemoveAll(d.store.Dir(name))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc, err := client.Manifest(ctx)
	if err != nil {
		return fmt.Errorf("volume %q: fetching its tree from the source host %s: %w", name, t.Addr, err)
	}
	var raw bytes.Buffer
	m, err := manifest.Decode(io.TeeReader(rc, &raw), manifest.DefaultLimits)
	rc.Close()
	if err != nil {
		return fmt.Errorf("volume %q: the source's manifest: %w", name, err)
	}
	if err := d.roomFor(m); err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	root := &m.Entries[0]
	for _, dir := range []string{d.store.DataDir(name), d.store.WorkDir(name)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	// The overlay's root takes its owner and mode from the upper layer.
	upper := d.store.UpperDir(name)
	if err := os.Mkdir(upper, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Lchown(upper, int(root.UID), int(root.GID)); err != nil {
		return err
	}
	if err := os.Chmod(upper, root.FileMode()); err != nil {
		return err
	}
	if err := os.WriteFile(d.store.ManifestPath(name), raw.Bytes(), 0o600); err != nil {
		return err
	}
	files, byteCount := m.Totals()
	v := &state.Volume{
		Name: name, Kind: state.KindFederated, CreatedAt: time.Now().UTC().Truncate(time.Second), Options: maps.Clone(opts),
		Federation: &state.FederationRecord{Ticket: opts["from"], Source: t.Addr, FilesTotal: files, BytesTotal: byteCount,
			StartedAt: time.Now().UTC()},
	}
	if err := d.startFederation(name, m, client); err != nil {
		return err
	}
	if err := d.store.Save(v); err != nil {
		d.feds[name].stop()
		delete(d.feds, name)
		return err
	}
	d.vols[name] = v
	d.log.Info("created federated volume", "volume", name, "source", t.Addr, "files", files, "bytes", byteCount)
	return nil
}

// startFederation opens the replica and starts the background copy.
// Bulk transfers go over HTTP/1.1, which Go serves at about half the CPU
// per byte of its HTTP/2 (measured in internal/peer's benchmarks); reads
// use HTTP/2, many small requests over one connection.
func (d *Driver) startFederation(name string, m *manifest.Manifest, client *peer.Client) error {
	rep, err := replica.Open(d.store.Dir(name), m)
	if err != nil {
		return err
	}
	bulk, err := peer.NewClient(client.Ticket(), peer.ClientOptions{RetryMax: 3, Logger: d.log, ForceHTTP1: true})
	if err != nil {
		rep.Close()
		return err
	}
	log := d.log.With("volume", name)
	cop := copier.New(rep, bulk, copier.Options{Demand: client, Permanent: permanent}, log)
	ctx, cancel := context.WithCancel(context.Background())
	f := &federation{name: name, m: m, rep: rep, client: client, bulk: bulk, cop: cop, cancel: cancel}
	d.feds[name] = f
	go func() {
		if err := cop.Run(ctx); err != nil {
			if ctx.Err() == nil {
				log.Error("the copy stopped", "error", err)
			}
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.feds[name] == f {
			d.copyComplete(name)
		}
	}()
	return nil
}

func (f *federation) stop() {
	f.cancel()
	f.cop.Close()
	if f.lower != nil {
		f.lower.Unmount()
		f.lower = nil
	}
	f.client.Close()
	f.bulk.Close()
	f.rep.Close()
}

// copyComplete records that every file is local and settles the volume
// if nothing uses it. Called with d.mu held.
func (d *Driver) copyComplete(name string) {
	v := d.vols[name]
	if v == nil || v.Federation == nil || !v.Federation.CompletedAt.IsZero() {
		return
	}
	nv := v.Clone()
	nv.Federation.CompletedAt = time.Now().UTC()
	if err := d.store.Save(nv); err != nil {
		d.log.Error("recording the copy's completion", "volume", name, "error", err)
		return
	}
	d.vols[name] = nv
	if err := d.settleIfReady(name); err != nil {
		d.log.Error("settling", "volume", name, "error", err)
	}
}

// federatedLower returns the lower layer for a federated volume's
// overlay: the replica itself once complete, else the FUSE view.
func (d *Driver) federatedLower(name string) (string, error) {
	if !d.vols[name].Federation.CompletedAt.IsZero() {
		return d.store.DataDir(name), nil
	}
	f := d.feds[name]
	if f == nil {
		return "", fmt.Errorf("volume %q: its copy is not running; see the plugin's log", name)
	}
	if f.lower == nil {
		dir := filepath.Join(d.runDir, "fuse", name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		fs, err := lazyfs.Mount(dir, f.m, f.cop, lazyfs.Options{Passthrough: d.cfg.Passthrough})
		if err != nil {
			return "", fmt.Errorf("volume %q: mounting the view of the source: %w", name, err)
		}
		f.lower = fs
	}
	return f.lower.Dir(), nil
}

func (d *Driver) attachFederated(name, mp string) error {
	lower, err := d.federatedLower(name)
	if err != nil {
		return err
	}
	if err := d.mnt.Overlay(lower, d.store.UpperDir(name), d.store.WorkDir(name), mp); err != nil {
		if f := d.feds[name]; f != nil {
			f.releaseLower(d)
		}
		return fmt.Errorf("volume %q: %w", name, err)
	}
	return nil
}

// releaseLower unmounts the FUSE view once neither the mountpoint nor an
// export view uses it.
func (f *federation) releaseLower(d *Driver) error {
	if f.lower == nil || f.view != "" {
		return nil
	}
	if n, err := d.mnt.Mounts(d.mountpoint(f.name)); err != nil || n > 0 {
		return err
	}
	err := f.lower.Unmount()
	f.lower = nil
	return err
}

// settleIfReady turns a federated volume whose copy is complete into a
// plain local volume, merging what containers wrote into the replica. It
// waits for a moment when nothing uses the volume. Called with d.mu held.
func (d *Driver) settleIfReady(name string) error {
	v := d.vols[name]
	if v == nil || v.Kind != state.KindFederated || len(v.Mounts) > 0 || d.exportOf(name) != "" {
		return nil
	}
	fr := v.Federation
	if fr.CompletedAt.IsZero() && !fr.Settling {
		return nil
	}
	if n, err := d.mnt.Mounts(d.mountpoint(name)); err != nil || n > 0 {
		return err
	}
	if f := d.feds[name]; f != nil {
		f.stop()
		delete(d.feds, name)
	}
	nv := v.Clone()
	nv.Federation.Settling = true
	if err := d.store.Save(nv); err != nil {
		return err
	}
	d.vols[name] = nv
	if err := replica.Settle(d.store.DataDir(name), d.store.UpperDir(name), d.store.WorkDir(name)); err != nil {
		return fmt.Errorf("volume %q: settling: %w", name, err)
	}
	for _, p := range []string{d.store.UpperDir(name), filepath.Join(d.store.Dir(name), "partial"), d.store.ManifestPath(name)} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	nv = nv.Clone()
	nv.Kind = state.KindLocal
	nv.Federation.Settling = false
	nv.Federation.Settled = true
	if err := d.store.Save(nv); err != nil {
		return err
	}
	d.vols[name] = nv
	d.log.Info("the copy is complete and the volume is local now", "volume", name)
	return nil
}

// resume restarts unfinished copies and settles, then serves the open
// exports again. Called with d.mu held, before the socket is served.
func (d *Driver) resume() error {
	for name, v := range d.vols {
		if v.Kind != state.KindFederated {
			continue
		}
		if v.Federation.Settling {
			if err := d.settleIfReady(name); err != nil {
				return err
			}
			continue
		}
		if !v.Federation.CompletedAt.IsZero() {
			continue // the replica is whole; it settles when unused
		}
		if err := d.resumeFederation(name, v); err != nil {
			// The volume stays listed (the engine forgets volumes whose Get
			// fails) and shows the copy as failed.
			d.log.Error("could not resume the copy", "volume", name, "error", err)
		}
	}
	d.resumeExports()
	return nil
}

func (d *Driver) resumeFederation(name string, v *state.Volume) error {
	t, err := peer.ParseTicket(v.Federation.Ticket)
	if err != nil {
		return err
	}
	client, err := peer.NewClient(t, peer.ClientOptions{RetryMax: 3, Logger: d.log})
	if err != nil {
		return err
	}
	raw, err := os.Open(d.store.ManifestPath(name))
	if err != nil {
		client.Close()
		return err
	}
	defer raw.Close()
	m, err := manifest.Decode(raw, manifest.DefaultLimits)
	if err != nil {
		client.Close()
		return fmt.Errorf("reading the saved manifest: %w", err)
	}
	if err := d.startFederation(name, m, client); err != nil {
		client.Close()
		return err
	}
	files, bytes := d.feds[name].rep.Progress()
	d.log.Info("resuming the copy", "volume", name, "files_copied", files, "bytes_copied", bytes)
	return nil
}
