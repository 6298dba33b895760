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
	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/replica"
	"github.com/cargo-migrate/cargo/internal/state"
)

// checkpointStall is how long a checkpoint's fetch may go without a byte
// landing before it fails: the container it is for is frozen meanwhile,
// and the move can roll back only once the fetch gives up.
const checkpointStall = time.Minute

// createCheckpointFetch fetches a checkpoint exported by another host into
// the target container's checkpoints directory, whole, before it returns,
// and records a volume that stands for it. Called with the volume's lock
// held; fetches into one checkpoint's place also wait for each other, and
// nothing else waits for either.
func (d *Driver) createCheckpointFetch(name string, opts map[string]string) error {
	t, err := peer.ParseTicket(opts[optCheckpointFrom])
	if err != nil {
		return fmt.Errorf("volume %q: option %s: %w", name, optCheckpointFrom, err)
	}
	ref := checkpointRef{Container: opts[optContainer], Name: opts[optCheckpointName]}
	if err := ref.validate(); err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	unlock := d.locks.lock(ref.lockName())
	defer unlock()
	started := time.Now().UTC()
	log := d.log.With("volume", name, "container", ref.Container, "checkpoint", ref.Name)
	err = d.fetchCheckpoint(t, ref, log, func(files int, bytes int64) error {
		v := &state.Volume{
			Name: name, Kind: kindCheckpoint, CreatedAt: started.Truncate(time.Second), Options: maps.Clone(opts),
			Federation: &state.FederationRecord{Ticket: opts[optCheckpointFrom], Source: t.Addr, FilesTotal: files, BytesTotal: bytes,
				StartedAt: started, CompletedAt: time.Now().UTC()},
		}
		err := os.MkdirAll(d.store.Dir(name), 0o700)
		if err == nil {
			err = d.store.Save(v)
		}
		if err != nil {
			os.RemoveAll(d.store.Dir(name))
			return err
		}
		d.setVolume(v)
		log.Info("fetched checkpoint", "source", t.Addr, "files", files, "bytes", bytes,
			"duration", v.Federation.CompletedAt.Sub(started).Round(time.Millisecond))
		return nil
	})
	if err != nil {
		return fmt.Errorf("volume %q: cannot fetch checkpoint %q into container %s: %w", name, ref.Name, ref.Container, err)
	}
	return nil
}

// fetchCheckpoint copies the exported checkpoint into a temporary
// directory beside its place, checks it against the source's manifest,
// renames it into place and calls commit. Whatever fails, nothing of the
// fetch is left in the checkpoints directory. The source is told last,
// once the checkpoint is in place and recorded.
func (d *Driver) fetchCheckpoint(t peer.Ticket, ref checkpointRef, log *slog.Logger, commit func(files int, bytes int64) error) (retErr error) {
	if err := d.ctx.Err(); err != nil {
		return errors.New("the plugin is stopping")
	}
	cps, err := d.checkpointsDir(ref.Container)
	if err != nil {
		return err
	}
	defer cps.Close()
	if exists, err := entryExists(cps, ref.Name); err != nil || exists {
		if err == nil {
			err = errCheckpointExists(ref.Name)
		}
		return err
	}
	client, err := peer.NewClient(t, peer.ClientOptions{RetryMax: 3, Logger: d.log, ForceHTTP1: true})
	if err != nil {
		return err
	}
	defer client.Close()
	m, err := checkpointManifest(d.ctx, client, t)
	if err != nil {
		return err
	}
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
	if err := copyCheckpoint(d.ctx, client, m, tmp, log); err != nil {
		return err
	}
	if err := checkFetched(d.ctx, tmp, m); err != nil {
		return err
	}
	if err := placeCheckpoint(cps, tmp, ref.Name); err != nil {
		return err
	}
	files, bytes := m.Totals()
	if err := commit(files, bytes); err != nil {
		if rerr := removeBeneath(cps, ref.Name); rerr != nil {
			log.Error("removing the checkpoint whose record could not be saved", "error", rerr)
		}
		return err
	}
	// The export closes once told; a target that could not tell it leaves
	// it open until its volume is removed on the source, which a move does.
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	if err := client.Complete(ctx, fmt.Sprintf("%d files, %d bytes", files, bytes)); err != nil {
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

// checkpointManifest fetches and validates the source's manifest, within
// the time a federated volume's create gives it, and refuses what no
// checkpoint holds.
func checkpointManifest(ctx context.Context, client *peer.Client, t peer.Ticket) (*manifest.Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
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
		return errors.New("the plugin is stopping")
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
