package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"time"

	"github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/copier"
	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/replica"
	"github.com/cargo-migrate/cargo/internal/state"
)

// checkpointStall is how long a checkpoint's fetch may go without a byte
// landing before it fails: the container it is for is frozen meanwhile,
// and the move can roll back only once the fetch gives up.
const checkpointStall = time.Minute

// createCheckpointFetch starts fetching a checkpoint exported by another
// host into the target container's checkpoints directory, and records a
// volume that stands for it. It returns once the source's manifest is
// checked and the record saved: the copy goes on in the background,
// because an engine gives a plugin's create only so long and a large
// checkpoint on a slow link takes longer. The volume's Status says when
// the checkpoint is in place (state copying, then complete or failed).
func (d *Driver) createCheckpointFetch(name string, opts map[string]string) error {
	t, err := peer.ParseTicket(opts[optCheckpointFrom])
	if err != nil {
		return fmt.Errorf("volume %q: option %s: %w", name, optCheckpointFrom, err)
	}
	ref := checkpointRef{Container: opts[optContainer], Name: opts[optCheckpointName]}
	if err := ref.validate(); err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	fail := func(err error) error {
		return fmt.Errorf("volume %q: cannot fetch checkpoint %q into container %s: %w", name, ref.Name, ref.Container, err)
	}
	client, m, err := d.prepareCheckpointFetch(t, ref)
	if err != nil {
		return fail(err)
	}
	files, bytes := m.Totals()
	v := &state.Volume{
		Name: name, Kind: kindCheckpoint, CreatedAt: time.Now().UTC().Truncate(time.Second), Options: maps.Clone(opts),
		Federation: &state.FederationRecord{Ticket: opts[optCheckpointFrom], Source: t.Addr, FilesTotal: files, BytesTotal: bytes,
			StartedAt: time.Now().UTC()},
	}
	err = os.MkdirAll(d.store.Dir(name), 0o700)
	if err == nil {
		err = d.store.Save(v)
	}
	if err != nil {
		client.Close()
		os.RemoveAll(d.store.Dir(name))
		return fail(err)
	}
	d.setVolume(v)
	d.startCheckpointFetch(v, client, m)
	return nil
}

// prepareCheckpointFetch checks that the checkpoint's place is free and
// that the source's checkpoint fits there, and returns a client of the
// source and its manifest.
func (d *Driver) prepareCheckpointFetch(t peer.Ticket, ref checkpointRef) (*peer.Client, *manifest.Manifest, error) {
	if err := d.ctx.Err(); err != nil {
		return nil, nil, errors.New("the plugin is stopping")
	}
	unlock := d.locks.lock(ref.lockName())
	defer unlock()
	cps, err := d.checkpointPlace(ref)
	if err != nil {
		return nil, nil, err
	}
	defer cps.Close()
	client, err := peer.NewClient(t, peer.ClientOptions{RetryMax: 3, Logger: d.log, ForceHTTP1: true})
	if err != nil {
		return nil, nil, err
	}
	m, err := checkpointManifest(d.ctx, client, t, manifestTimeout)
	if err == nil {
		err = roomIn(cps, m)
	}
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, m, nil
}

// checkpointPlace opens the checkpoints directory of ref's container and
// checks that nothing is at ref's place yet.
func (d *Driver) checkpointPlace(ref checkpointRef) (*os.File, error) {
	cps, err := d.checkpointsDir(ref.Container)
	if err != nil {
		return nil, err
	}
	if exists, err := entryExists(cps, ref.Name); err != nil || exists {
		cps.Close()
		if err == nil {
			err = errCheckpointExists(ref.Name)
		}
		return nil, err
	}
	return cps, nil
}

// checkpointFetch is a fetch running in the background: Remove stops it
// and waits for it before the volume goes.
type checkpointFetch struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// startCheckpointFetch fetches v's checkpoint in a goroutine Close waits
// for. With m nil (a fetch resumed after a restart) the manifest is
// fetched again first; client may be nil then too.
func (d *Driver) startCheckpointFetch(v *state.Volume, client *peer.Client, m *manifest.Manifest) {
	ctx, cancel := context.WithCancel(d.ctx)
	cf := &checkpointFetch{ctx: ctx, cancel: cancel, done: make(chan struct{})}
	d.mu.Lock()
	d.fetches[v.Name] = cf
	d.mu.Unlock()
	ref := checkpointRef{Container: v.Options[optContainer], Name: v.Options[optCheckpointName]}
	log := d.log.With("volume", v.Name, "container", ref.Container, "checkpoint", ref.Name)
	d.copies.Add(1)
	go func() {
		defer d.copies.Done()
		defer close(cf.done)
		defer cancel()
		err := d.runCheckpointFetch(ctx, v, ref, client, m, log)
		d.mu.Lock()
		delete(d.fetches, v.Name)
		d.mu.Unlock()
		switch {
		case err == nil:
		case d.ctx.Err() != nil:
			log.Info("checkpoint fetch stopped with the plugin; it resumes at the next start")
		case ctx.Err() != nil:
			log.Info("checkpoint fetch stopped: its volume is being removed")
		default:
			d.fail(v.Name, failCopy, fmt.Errorf("cannot fetch checkpoint %q into container %s: %w", ref.Name, ref.Container, err))
		}
	}()
}

// stopCheckpointFetch stops name's background fetch, if one runs, and
// waits for it to end. Called with no lock held: the fetch takes locks.
func (d *Driver) stopCheckpointFetch(name string) {
	d.mu.Lock()
	cf := d.fetches[name]
	d.mu.Unlock()
	if cf != nil {
		cf.cancel()
		<-cf.done
	}
}

// runCheckpointFetch is the body of a background fetch: into place, then
// recorded complete, then the source told.
func (d *Driver) runCheckpointFetch(ctx context.Context, v *state.Volume, ref checkpointRef, client *peer.Client, m *manifest.Manifest, log *slog.Logger) error {
	if client == nil {
		// Resumed at a start: a checkpoint this very plugin exports (a
		// host that is its own source, as in tests) is served again first.
		select {
		case <-d.exportsServed:
		case <-ctx.Done():
			return ctx.Err()
		}
		t, err := peer.ParseTicket(v.Federation.Ticket)
		if err != nil {
			return err
		}
		if client, err = peer.NewClient(t, peer.ClientOptions{RetryMax: 3, Logger: d.log, ForceHTTP1: true}); err != nil {
			return err
		}
	}
	defer client.Close()
	if m == nil {
		var err error
		if m, err = checkpointManifest(ctx, client, peer.Ticket{Addr: v.Federation.Source}, 2*time.Minute); err != nil {
			return err
		}
		if files, bytes := m.Totals(); files != v.Federation.FilesTotal || bytes != v.Federation.BytesTotal {
			return fmt.Errorf("the source's checkpoint changed: %d files, %d bytes, recorded %d files, %d bytes", files, bytes, v.Federation.FilesTotal, v.Federation.BytesTotal)
		}
	}
	return d.fetchCheckpoint(ctx, client, m, ref, log, func() error {
		done := *v
		fr := *v.Federation
		fr.CompletedAt = time.Now().UTC()
		done.Federation = &fr
		if err := d.store.Save(&done); err != nil {
			return err
		}
		d.setVolume(&done)
		log.Info("fetched checkpoint", "source", fr.Source, "files", fr.FilesTotal, "bytes", fr.BytesTotal,
			"duration", fr.CompletedAt.Sub(fr.StartedAt).Round(time.Millisecond))
		return nil
	})
}

// fetchCheckpoint copies the exported checkpoint into a temporary
// directory beside its place, checks it against the source's manifest,
// renames it into place and calls commit. Whatever fails, nothing of the
// fetch is left in the checkpoints directory. The source is told last,
// once the checkpoint is in place and recorded.
func (d *Driver) fetchCheckpoint(ctx context.Context, client *peer.Client, m *manifest.Manifest, ref checkpointRef, log *slog.Logger, commit func() error) (retErr error) {
	// Fetches into one checkpoint's place wait for each other.
	unlock := d.locks.lock(ref.lockName())
	defer unlock()
	cps, err := d.checkpointPlace(ref)
	if err != nil {
		return err
	}
	defer cps.Close()
	if err := roomIn(cps, m); err != nil {
		return err
	}

	tmpName := fetchPrefix + ref.Name
	// Only a fetch cut short by a crash leaves this; the lock above keeps
	// any other fetch from making it meanwhile.
	if err := removeBeneath(cps, tmpName); err != nil {
		return fmt.Errorf("removing what an interrupted fetch left: %w", err)
	}
	if err := unix.Mkdirat(int(cps.Fd()), tmpName, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", tmpName, err)
	}
	defer func() {
		if err := removeBeneath(cps, tmpName); err != nil {
			log.Error("removing the fetch's temporary directory", "error", err)
		}
	}()
	tmp, err := openBeneath(cps, tmpName)
	if err != nil {
		return err
	}
	defer tmp.Close()
	if err := copyCheckpoint(ctx, client, m, tmp, log); err != nil {
		return err
	}
	if err := checkFetched(ctx, tmp, m); err != nil {
		return err
	}
	if err := failpoint.Inject("driver.checkpoint.before-place"); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("the fetch was stopped") // its volume is being removed: place nothing
	}
	if err := placeCheckpoint(cps, tmp, ref.Name); err != nil {
		return err
	}
	// Gone before the record says complete, so that what the engine
	// restores from is all that is left.
	if err := removeBeneath(cps, tmpName); err != nil {
		log.Error("removing the fetch's temporary directory", "error", err)
	}
	files, bytes := m.Totals()
	if err := commit(); err != nil {
		if rerr := removeBeneath(cps, ref.Name); rerr != nil {
			log.Error("removing the checkpoint whose record could not be saved", "error", rerr)
		}
		return err
	}
	// The export closes once told; a target that could not tell it leaves
	// it open until its volume is removed on the source, which a move does.
	tctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	if err := client.Complete(tctx, fmt.Sprintf("%d files, %d bytes", files, bytes)); err != nil {
		log.Warn("the source was not told that the checkpoint arrived", "error", err)
	}
	return nil
}

// entryExists tells whether dir holds name, of any type.
func entryExists(dir *os.File, name string) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	}
	return false, fmt.Errorf("looking for %s: %w", name, err)
}

// checkpointManifest fetches and validates the source's manifest within
// limit, and refuses what no checkpoint holds.
func checkpointManifest(ctx context.Context, client *peer.Client, t peer.Ticket, limit time.Duration) (*manifest.Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	rc, err := client.Manifest(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetching its tree from the source host %s: %w", t.Addr, err)
	}
	defer rc.Close()
	m, err := manifest.Decode(rc, manifest.DefaultLimits)
	if err != nil {
		return nil, fmt.Errorf("the source's manifest: %w", err)
	}
	return m, checkCheckpointTree(m)
}

// checkCheckpointTree refuses anything a checkpoint does not hold: it is
// placed in the engine's own directory, so only directories and regular
// files, without set-id or sticky bits, go there.
func checkCheckpointTree(m *manifest.Manifest) error {
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type != manifest.TypeDir && e.Type != manifest.TypeFile {
			return fmt.Errorf("the source's checkpoint holds %q, a %s: refused, a checkpoint holds only directories and regular files", e.Path, e.Type)
		}
		if e.Mode&^0o777 != 0 {
			return fmt.Errorf("the source's checkpoint holds %q with mode %#o: refused, a checkpoint has no set-id or sticky bits", e.Path, e.Mode)
		}
	}
	return nil
}

// roomIn refuses a checkpoint that cannot fit in the file system of dir.
func roomIn(dir *os.File, m *manifest.Manifest) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &fs); err != nil {
		return nil // cannot tell; the copy reports a full disk if it comes
	}
	_, need := m.Totals()
	if free := int64(fs.Bavail) * int64(fs.Bsize); need > free {
		return fmt.Errorf("it needs %s but the engine's containers directory has %s free; free some space, then move again",
			units.BytesSize(float64(need)), units.BytesSize(float64(free)))
	}
	return nil
}

// copyCheckpoint fills dir/data with the checkpoint through a replica
// and its copier: the background copy alone, no view, no overlay. It
// returns once every file is proven on disk, or fails when the source
// refuses for good or nothing lands for checkpointStall.
func copyCheckpoint(ctx context.Context, client *peer.Client, m *manifest.Manifest, dir *os.File, log *slog.Logger) error {
	rep, err := replica.Open(fdPath(dir), m)
	if err != nil {
		return err
	}
	defer rep.Close()
	cop := copier.New(rep, untold{client}, copier.Options{Permanent: permanent, Dir: fdPath(dir)}, log)
	defer cop.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go stopWhenStalled(ctx, cancel, cop, checkpointStall)
	err = cop.Run(ctx)
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if ctx.Err() != nil {
		return errors.New("the fetch was stopped")
	}
	return err
}

// stopWhenStalled cancels ctx once the copy has landed nothing for limit.
func stopWhenStalled(ctx context.Context, stop context.CancelCauseFunc, cop *copier.Copier, limit time.Duration) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// Status also notes the time of the last progress.
		st := cop.Status()
		if time.Since(st.Updated) < limit {
			continue
		}
		why := st.Error
		if why == "" {
			why = "the source sent nothing"
		}
		stop(fmt.Errorf("no progress for %s: %s", limit, why))
		return
	}
}

// untold is the source as the copier sees it, except that the copier's
// report of completion goes nowhere: the source is told only once the
// checkpoint is in place (fetchCheckpoint).
type untold struct{ *peer.Client }

func (untold) Complete(context.Context, string) error { return nil }

// checkFetched walks what the fetch wrote and compares it with the
// source's manifest, entry by entry: the same paths, types, sizes, modes,
// owners and hard links, and nothing more.
func checkFetched(ctx context.Context, dir *os.File, want *manifest.Manifest) error {
	data, err := openBeneath(dir, "data")
	if err != nil {
		return err
	}
	defer data.Close()
	root, err := os.OpenRoot(fdPath(data))
	if err != nil {
		return err
	}
	defer root.Close()
	got, err := manifest.Walk(ctx, root)
	if err != nil {
		return fmt.Errorf("reading the fetched checkpoint: %w", err)
	}
	return sameTree(got, want)
}

// sameTree tells how got differs from want, if it does.
func sameTree(got, want *manifest.Manifest) error {
	if len(got.Entries) != len(want.Entries) {
		return fmt.Errorf("the fetched checkpoint has %d entries, the source's %d", len(got.Entries), len(want.Entries))
	}
	for i := range want.Entries {
		g, w := &got.Entries[i], &want.Entries[i]
		switch {
		case g.Path != w.Path:
			return fmt.Errorf("the fetched checkpoint has %q where the source's has %q", g.Path, w.Path)
		case g.Type != w.Type, g.Size != w.Size, g.Mode != w.Mode, g.UID != w.UID, g.GID != w.GID, g.LinkTo != w.LinkTo, g.Nlink != w.Nlink:
			return fmt.Errorf("%q differs from the source's: %s %d bytes mode %#o owner %d:%d, the source's %s %d bytes mode %#o owner %d:%d",
				w.Path, g.Type, g.Size, g.Mode, g.UID, g.GID, w.Type, w.Size, w.Mode, w.UID, w.GID)
		}
	}
	return nil
}

// fetchOf is name's background fetch, nil if none runs.
func (d *Driver) fetchOf(name string) *checkpointFetch {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fetches[name]
}
