package driver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	log    *slog.Logger
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
// Called with the volume's lock held; fetching the manifest may take
// minutes when the source is slow or silent, and only this volume waits.
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
	f, err := d.startFederation(name, m, client)
	if err != nil {
		return err
	}
	if err := d.store.Save(v); err != nil {
		d.setFed(name, nil)
		f.stop()
		return err
	}
	d.setVolume(v)
	d.log.Info("created federated volume", "volume", name, "source", t.Addr, "files", files, "bytes", byteCount)
	return nil
}

// startFederation opens the replica and starts the background copy.
// Bulk transfers go over HTTP/1.1, which Go serves at about half the CPU
// per byte of its HTTP/2 (measured in internal/peer's benchmarks); reads
// use HTTP/2, many small requests over one connection. Called with the
// volume's lock held.
func (d *Driver) startFederation(name string, m *manifest.Manifest, client *peer.Client) (*federation, error) {
	rep, err := replica.Open(d.store.Dir(name), m)
	if err != nil {
		return nil, err
	}
	bulk, err := peer.NewClient(client.Ticket(), peer.ClientOptions{RetryMax: 3, Logger: d.log, ForceHTTP1: true})
	if err != nil {
		rep.Close()
		return nil, err
	}
	log := d.log.With("volume", name)
	cop := copier.New(rep, bulk, copier.Options{Demand: client, Permanent: permanent}, log)
	ctx, cancel := context.WithCancel(context.Background())
	f := &federation{name: name, m: m, rep: rep, client: client, bulk: bulk, cop: cop, cancel: cancel, log: log}
	d.setFed(name, f)
	go func() {
		if err := cop.Run(ctx); err != nil {
			if ctx.Err() == nil {
				log.Error("the copy stopped", "error", err)
			}
			return
		}
		<-d.started
		unlock := d.locks.lock(name)
		defer unlock()
		if d.fed(name) == f {
			d.copyComplete(name)
		}
	}()
	return f, nil
}

func (f *federation) stop() {
	f.cancel()
	f.cop.Close()
	if f.lower != nil {
		if err := f.lower.Unmount(); err != nil {
			f.log.Error("unmounting the view of the source", "error", err)
		}
		f.lower = nil
	}
	f.client.Close()
	f.bulk.Close()
	f.rep.Close()
}

// copyComplete records that every file is local and settles the volume
// if nothing uses it. Called with the volume's lock held.
func (d *Driver) copyComplete(name string) {
	v := d.volume(name)
	if v == nil || v.Federation == nil || !v.Federation.CompletedAt.IsZero() {
		return
	}
	nv := v.Clone()
	nv.Federation.CompletedAt = time.Now().UTC()
	if err := d.store.Save(nv); err != nil {
		d.log.Error("recording the copy's completion", "volume", name, "error", err)
		return
	}
	d.setVolume(nv)
	if err := d.settleIfReady(name); err != nil {
		d.log.Error("settling", "volume", name, "error", err)
	}
}

// federatedLower returns the lower layer for a federated volume's
// overlay: the replica itself once complete, else the FUSE view. Called
// with the volume's lock held, which guards the federation's lower and
// view.
func (d *Driver) federatedLower(name string) (string, error) {
	if !d.volume(name).Federation.CompletedAt.IsZero() {
		return d.store.DataDir(name), nil
	}
	f := d.fed(name)
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
		if f := d.fed(name); f != nil {
			if rerr := f.releaseLower(d); rerr != nil {
				d.log.Error("releasing the view of the source", "volume", name, "error", rerr)
			}
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
// waits for a moment when nothing uses the volume. Called with the
// volume's lock held: merging walks the whole upper layer.
func (d *Driver) settleIfReady(name string) error {
	v := d.volume(name)
	if v == nil || v.Kind != state.KindFederated || len(v.Mounts) > 0 || d.frozenBy(name) != nil {
		return nil
	}
	fr := v.Federation
	if fr.CompletedAt.IsZero() && !fr.Settling {
		return nil
	}
	if n, err := d.mnt.Mounts(d.mountpoint(name)); err != nil || n > 0 {
		return err
	}
	if f := d.fed(name); f != nil {
		d.setFed(name, nil)
		f.stop()
	}
	nv := v.Clone()
	nv.Federation.Settling = true
	if err := d.store.Save(nv); err != nil {
		return err
	}
	d.setVolume(nv)
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
	d.setVolume(nv)
	d.log.Info("the copy is complete and the volume is local now", "volume", name)
	return nil
}

// resume restarts unfinished copies and settles, then serves the open
// exports again. Called from New.
func (d *Driver) resume() error {
	for _, name := range d.names() {
		v := d.volume(name)
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
	f, err := d.startFederation(name, m, client)
	if err != nil {
		client.Close()
		return err
	}
	files, bytes := f.rep.Progress()
	d.log.Info("resuming the copy", "volume", name, "files_copied", files, "bytes_copied", bytes)
	return nil
}
