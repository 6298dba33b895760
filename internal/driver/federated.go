package driver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cargo-migrate/cargo/internal/atomicfile"
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
	// mounted is closed at the volume's first mount.
	mounted     chan struct{}
	mountedOnce sync.Once
}

// copyHold is how long the background copy of a volume created with
// copy=after-mount (a move of a running container) waits after the
// volume's first mount, so that the rest of the container's start
// (network, process) does not compete with it for the disk and the CPU;
// copyHoldMax bounds the wait for a mount that does not come. Reads of
// data not yet copied are served meanwhile, as ever.
const (
	copyHold    = time.Second
	copyHoldMax = 10 * time.Second
)

func (f *federation) markMounted() { f.mountedOnce.Do(func() { close(f.mounted) }) }

// holdCopy waits until the background copy may start: false when ctx
// ended first.
func (f *federation) holdCopy(ctx context.Context) bool {
	limit := time.NewTimer(copyHoldMax)
	defer limit.Stop()
	select {
	case <-f.mounted:
	case <-limit.C:
		return true
	case <-ctx.Done():
		return false
	}
	hold := time.NewTimer(copyHold)
	defer hold.Stop()
	select {
	case <-hold.C:
		return true
	case <-ctx.Done():
		return false
	}
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
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), manifestTimeout)
	defer cancel()
	rc, err := client.Manifest(ctx)
	if err != nil {
		return fmt.Errorf("volume %q: fetching its tree from the source host %s: %w", name, t.Addr, manifestErr(ctx, err))
	}
	if err := os.MkdirAll(d.store.Dir(name), 0o700); err != nil {
		rc.Close()
		return err
	}
	// The manifest as it arrives goes to a temporary file beside
	// manifest.gz while it is decoded, rather than into a buffer beside
	// the decoded one: about 9 bytes an entry compressed
	// (BenchmarkEncode), up to twice that while the buffer grew.
	raw, err := newManifestFile(d.store.ManifestPath(name))
	if err != nil {
		rc.Close()
		return err
	}
	defer raw.discard()
	m, err := manifest.Decode(io.TeeReader(rc, raw), manifest.DefaultLimits)
	rc.Close()
	if err != nil {
		return fmt.Errorf("volume %q: the source's manifest: %w", name, manifestErr(ctx, err))
	}
	fetched := time.Since(began)
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
	// Durable before the record that points at it: a power cut must not
	// leave a volume whose tree is a torn file.
	if err := raw.commit(); err != nil {
		return err
	}
	files, byteCount := m.Totals()
	v := &state.Volume{
		Name: name, Kind: state.KindFederated, CreatedAt: time.Now().UTC().Truncate(time.Second), Options: maps.Clone(opts),
		Federation: &state.FederationRecord{Ticket: opts["from"], Source: t.Addr, FilesTotal: files, BytesTotal: byteCount,
			StartedAt: time.Now().UTC()},
	}
	f, err := d.startFederation(name, m, client, opts["copy"] == "after-mount")
	if err != nil {
		return err
	}
	if err := d.store.Save(v); err != nil {
		d.setFed(name, nil)
		f.stop()
		return err
	}
	d.setVolume(v)
	d.log.Info("created federated volume", "volume", name, "source", t.Addr, "files", files, "bytes", byteCount,
		"manifest_fetched", fetched.Round(time.Millisecond), "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// manifestFile writes a federated volume's manifest, as it arrives, to a
// temporary file beside manifest.gz, and on commit makes it manifest.gz as
// atomicfile.WriteFile would: fsync, rename, fsync of the directory.
type manifestFile struct {
	path string
	tmp  string
	f    *os.File
	w    *bufio.Writer
	err  error // the first write error; Decode sees none of them
}

func newManifestFile(path string) (*manifestFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &manifestFile{path: path, tmp: f.Name(), f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

// Write keeps the first error for commit, and never fails the tee: the
// manifest is decoded whole either way and the error then reported.
func (mf *manifestFile) Write(p []byte) (int, error) {
	if mf.err == nil {
		_, mf.err = mf.w.Write(p)
	}
	return len(p), nil
}

func (mf *manifestFile) commit() error {
	err := mf.err
	if err == nil {
		err = mf.w.Flush()
	}
	if err == nil {
		err = mf.f.Chmod(0o600)
	}
	if err == nil {
		err = mf.f.Sync()
	}
	if cerr := mf.f.Close(); err == nil {
		err = cerr
	}
	mf.f = nil
	if err == nil {
		err = os.Rename(mf.tmp, mf.path)
	}
	if err == nil {
		mf.tmp = ""
	}
	if err == nil {
		err = atomicfile.SyncDir(filepath.Dir(mf.path))
	}
	if err != nil {
		return fmt.Errorf("saving the volume's tree: %w", err)
	}
	return nil
}

// discard removes the temporary file unless commit renamed it.
func (mf *manifestFile) discard() {
	if mf.f != nil {
		mf.f.Close()
	}
	if mf.tmp != "" {
		os.Remove(mf.tmp)
	}
}

// manifestTimeout bounds fetching and decoding a federated volume's tree
// inside Create: the engine gives a plugin 30 s to answer (`docker plugin
// enable --timeout`), then reports a timeout and forgets the volume, so a
// create that went on after that would leave a volume the user was told
// failed.
const manifestTimeout = 25 * time.Second

// manifestErr says a deadline in the user's terms.
func manifestErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("the source's tree did not arrive within %v, inside the engine's 30 s for creating a volume (a slow link, or a source too busy to answer): %w", manifestTimeout, err)
	}
	return err
}

// startFederation opens the replica and starts the background copy.
// Bulk transfers go over HTTP/1.1, which Go serves at about half the CPU
// per byte of its HTTP/2 (measured in internal/peer's benchmarks); reads
// use HTTP/2, many small requests over one connection. Called with the
// volume's lock held.
func (d *Driver) startFederation(name string, m *manifest.Manifest, client *peer.Client, hold bool) (*federation, error) {
	if err := d.ctx.Err(); err != nil {
		return nil, errors.New("the plugin is stopping")
	}
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
	cop := copier.New(rep, bulk, copier.Options{Demand: client, Permanent: permanent, Dir: d.store.Dir(name)}, log)
	ctx, cancel := context.WithCancel(d.ctx)
	f := &federation{name: name, m: m, rep: rep, client: client, bulk: bulk, cop: cop, cancel: cancel, log: log,
		mounted: make(chan struct{})}
	d.setFed(name, f)
	d.copies.Add(1)
	go func() {
		defer d.copies.Done()
		if hold && !f.holdCopy(ctx) {
			return
		}
		if err := cop.Run(ctx); err != nil {
			if ctx.Err() == nil {
				log.Error("the copy stopped", "error", err)
			}
			return
		}
		unlock := d.locks.lock(name)
		defer unlock()
		if d.ctx.Err() == nil && d.fed(name) == f {
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
		d.log.Error("settling failed; it is retried on the volume's next mount or the plugin's next start", "volume", name, "error", err)
	}
}

// federatedLower returns the lower layer for a federated volume's
// overlay: the replica itself once complete, else the FUSE view. Called
// with the volume's lock held, which guards the federation's lower and
// view.
func (d *Driver) federatedLower(name string) (string, error) {
	fr := d.volume(name).Federation
	if step := fr.Step(); step != "" {
		// Half-merged: settle first (Mount does, when nothing uses it).
		return "", fmt.Errorf("volume %q is being settled (step %s); retry once nothing uses it", name, step)
	}
	if !fr.CompletedAt.IsZero() {
		return d.store.DataDir(name), nil
	}
	f := d.fed(name)
	if f == nil {
		return "", fmt.Errorf("volume %q: its copy is not running; see the plugin's log", name)
	}
	if f.lower == nil {
		dir := d.viewDir(name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		fs, err := lazyfs.Mount(dir, f.m, f.cop, lazyfs.Options{Passthrough: d.cfg.Passthrough, Keeper: d.cfg.Keeper})
		if err != nil {
			return "", fmt.Errorf("volume %q: mounting the view of the source: %w", name, err)
		}
		f.lower = fs
	}
	return f.lower.Dir(), nil
}

// viewDir is where the FUSE view of a federated volume's source is
// mounted.
func (d *Driver) viewDir(name string) string { return filepath.Join(d.runDir, "fuse", name) }

// viewKept reports whether the keeper kept, from the previous process,
// the FUSE connection of name's view.
func (d *Driver) viewKept(name string) bool {
	return d.cfg.Keeper != nil && d.cfg.Keeper.Holds(d.viewDir(name))
}

// resumeView serves again the view the previous process's overlay at the
// mountpoint reads, whose connection the keeper kept: the containers
// using that overlay only paused. Called with the volume's lock held,
// once the copy runs again.
func (d *Driver) resumeView(name string) {
	f := d.fed(name)
	if f == nil || f.lower != nil {
		return
	}
	if _, err := d.federatedLower(name); err != nil {
		d.log.Error("serving the kept view of the source again", "volume", name, "error", err)
		return
	}
	if f.lower.Resumed() {
		d.log.Info("serving the view of the source again; the containers using it only paused", "volume", name)
	}
}

func (d *Driver) attachFederated(name, mp string) error {
	if err := d.checkNoOverlay(name); err != nil {
		return err
	}
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
	if f := d.fed(name); f != nil {
		f.markMounted()
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

func (d *Driver) resumeFederation(name string, v *state.Volume) error {
	t, err := peer.ParseTicket(v.Federation.Ticket)
	if err != nil {
		return err
	}
	client, err := peer.NewClient(t, peer.ClientOptions{RetryMax: 3, Logger: d.log})
	if err != nil {
		return err
	}
	began := time.Now()
	raw, err := os.Open(d.store.ManifestPath(name))
	if err != nil {
		client.Close()
		return err
	}
	defer raw.Close()
	m, err := manifest.Decode(bufio.NewReaderSize(raw, 256<<10), manifest.DefaultLimits)
	if err != nil {
		client.Close()
		return fmt.Errorf("reading the saved manifest: %w", err)
	}
	decoded := time.Since(began)
	f, err := d.startFederation(name, m, client, false)
	if err != nil {
		client.Close()
		return err
	}
	files, bytes := f.rep.Progress()
	d.log.Info("resuming the copy", "volume", name, "files_copied", files, "bytes_copied", bytes,
		"manifest_read", decoded.Round(time.Millisecond), "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// Two overlays must never share an upper layer: with index=off the kernel
// only warns, and what either shows or writes is then undefined. After a
// plugin crash the previous process's overlay stays mounted at the
// volume's mountpoint, held by the containers that use it, over a FUSE view
// of the source that died with that process. Of the ways out, reusing that
// overlay gives new containers a dead view; a fresh upper layer for a new
// overlay would need a merge of two uppers that both changed, and a mount
// over an upper that containers still write; refusing new mounts until the
// containers let go of the old overlay loses nothing and is what restarting
// them (which the old overlay needs anyway) ends. So: refuse. An overlay
// whose lower layer is the replica itself (the copy was complete) is
// alive, and shared as any mount is.

// errPreviousMount is why a mount or export of a volume is refused while
// the previous process's overlay is in use.
func errPreviousMount(name string) error {
	return fmt.Errorf("volume %q: containers still use the volume's previous mount, made before the plugin restarted, "+
		"whose view of the source is gone; restart them (docker ps --filter volume=%s), then mount it again", name, name)
}

// checkPreviousMount looks, at start-up, at the overlay found at a
// federated volume's mountpoint, which its mount references hold: the
// previous process made it. It is kept; it is stale (refusing new mounts
// until its references are gone) unless its lower layer is the replica.
// Called with the volume's lock held.
func (d *Driver) checkPreviousMount(name string) error {
	ovs, err := d.mnt.Overlays(d.store.UpperDir(name))
	if err != nil {
		return err
	}
	mp := d.mountpoint(name)
	for _, o := range ovs {
		if o.Target == mp && o.Lower == d.store.DataDir(name) {
			return nil // over the replica: alive
		}
		if f := d.fed(name); o.Target == mp && o.Lower == d.viewDir(name) && f != nil && f.lower != nil && f.lower.Resumed() {
			return nil // over the view kept across the restart: alive
		}
	}
	d.setStale(name, true)
	d.log.Warn("containers use a mount of the volume from the previous plugin process, whose view of the source is gone; "+
		"new mounts are refused until they are restarted", "volume", name, "mounts", len(d.volume(name).Mounts))
	return nil
}

// checkNoOverlay refuses to mount an overlay on name's upper layer while
// another is mounted on it: one in this process's mount table, or one the
// kernel says is in use elsewhere (containers holding the overlay of a
// plugin that was disabled with -f). Called with the volume's lock held,
// when neither its mountpoint nor an export view of this process uses it.
func (d *Driver) checkNoOverlay(name string) error {
	upper := d.store.UpperDir(name)
	ovs, err := d.mnt.Overlays(upper)
	if err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	if len(ovs) > 0 {
		return errPreviousMount(name)
	}
	p, ok := d.mnt.(upperProber)
	if !ok {
		return nil
	}
	inUse, err := p.UpperInUse(upper, filepath.Join(d.store.Dir(name), "probe"))
	if err != nil {
		// The probe cannot tell: the mount table above is all there is.
		d.log.Warn("cannot ask the kernel whether the volume's upper layer is in use", "volume", name, "error", err)
		return nil
	}
	if inUse {
		return errPreviousMount(name)
	}
	return nil
}

func (d *Driver) stale(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.staleMounts[name]
}

func (d *Driver) setStale(name string, stale bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if stale {
		d.staleMounts[name] = true
	} else {
		delete(d.staleMounts, name)
	}
}
