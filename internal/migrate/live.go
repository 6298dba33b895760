package migrate

// The phases of a live move (`--live`): checkpoint instead of stop, the
// checkpoint carried from plugin to plugin, restore instead of start.
// The checkpoint stays in the source container's own checkpoints
// directory until the move is done, so a failed restore on the target can
// restore it on the source.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/docker/go-units"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// checkpointSuffix names the export of a live move's checkpoint on the
// source and its fetch on the target.
const checkpointSuffix = ".cargo-checkpoint"

// checkpointExport is a checkpoint the source's plugin serves.
type checkpointExport struct {
	ticket       string
	files, bytes int64
}

// checkpointVolume names the volume that carries a move's checkpoint, on
// both sides.
func checkpointVolume(rec *moveRecord) string {
	return rec.Container + "." + rec.Checkpoint + checkpointSuffix
}

// checkpoint records the move, keeps the source from restarting, and
// checkpoints its processes (which stops them: the downtime starts), then
// opens the checkpoint's export on the source's plugin.
func (m *mover) checkpoint(ctx context.Context) (string, error) {
	if m.report.probeLater && (m.rec == nil || m.rec.Checkpoint == "") {
		// The target lacked the image at the check: probe it now.
		if err := probeCheckpoint(ctx, m.dst, m.ctr.Image); err != nil && !errors.Is(err, errNoProbe) {
			return "", err
		}
	}
	if err := m.hold(ctx); err != nil {
		return "", err
	}
	if m.rec.Checkpoint == "" {
		m.rec.Checkpoint = "cargo-" + time.Now().UTC().Format("20060102T150405")
		if err := m.rec.save(ctx, m.src.API); err != nil {
			return "", err
		}
		start := time.Now()
		if _, err := m.src.API.CheckpointCreate(ctx, m.ctr.ID, client.CheckpointCreateOptions{CheckpointID: m.rec.Checkpoint, Exit: true}); err != nil {
			return "", fmt.Errorf("checkpointing %s on %s: %w", m.res.Container, m.src.Context, err)
		}
		m.stopAt = start
	}
	ctrl := checkpointVolume(m.rec)
	m.rec.Exports = addOnce(m.rec.Exports, ctrl)
	if err := m.rec.save(ctx, m.src.API); err != nil {
		return "", err
	}
	if _, err := m.src.API.VolumeCreate(ctx, client.VolumeCreateOptions{Name: ctrl, Driver: PluginName,
		DriverOpts: map[string]string{"checkpoint": m.ctr.ID + "/" + m.rec.Checkpoint, "to": m.dst.Context}}); err != nil {
		return "", fmt.Errorf("opening an export of the checkpoint on %s: %w", m.src.Context, err)
	}
	v, err := m.src.API.VolumeInspect(ctx, ctrl, client.VolumeInspectOptions{})
	if err != nil {
		return "", err
	}
	st := volstatus.Parse(v.Volume.Status)
	if st.Ticket == "" {
		return "", fmt.Errorf("the export of the checkpoint on %s has no ticket", m.src.Context)
	}
	m.ckpt = &checkpointExport{ticket: st.Ticket, files: st.FilesTotal, bytes: st.BytesTotal}
	return fmt.Sprintf("%s of images (%d files)", units.BytesSize(float64(st.BytesTotal)), st.FilesTotal), nil
}

// transfer has the target's plugin fetch the checkpoint into the target
// container's own checkpoints directory, where the engine restores from.
func (m *mover) transfer(ctx context.Context) (string, error) {
	name := checkpointVolume(m.rec)
	m.rec.Volumes = addOnce(m.rec.Volumes, name)
	if err := m.rec.save(ctx, m.src.API); err != nil {
		return "", err
	}
	start := time.Now()
	if _, err := m.dst.API.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name, Driver: PluginName, DriverOpts: map[string]string{
		"checkpoint-from": m.ckpt.ticket, "container": m.targetID, "checkpoint-name": m.rec.Checkpoint,
	}}); err != nil {
		return "", fmt.Errorf("carrying the checkpoint to %s: %w", m.dst.Context, err)
	}
	if err := waitFetched(ctx, m.dst, name); err != nil {
		return "", fmt.Errorf("carrying the checkpoint to %s: %w", m.dst.Context, err)
	}
	d := time.Since(start)
	rate := float64(m.ckpt.bytes) / max(d.Seconds(), 1e-3)
	return fmt.Sprintf("%s in %s (%s/s)", units.BytesSize(float64(m.ckpt.bytes)), d.Round(time.Millisecond), units.BytesSize(rate)), nil
}

// waitFetched waits until the target's plugin holds the checkpoint its
// volume name fetches: the fetch goes on after the create returns (an
// engine gives a plugin's create only so long), and fails by itself when
// the source stops sending. The first looks come soon: the container is
// frozen meanwhile.
func waitFetched(ctx context.Context, dst Engine, name string) error {
	for wait := 2 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		v, err := dst.API.VolumeInspect(ctx, name, client.VolumeInspectOptions{})
		if err != nil {
			return err
		}
		switch st := volstatus.Parse(v.Volume.Status); st.State {
		case volstatus.StateComplete:
			return nil
		case volstatus.StateFailed:
			return errors.New(st.Error)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// restore starts the target container from the checkpoint: its processes
// go on where they were.
func (m *mover) restore(ctx context.Context) (string, error) {
	m.rec.Starting = true
	if err := m.rec.save(ctx, m.src.API); err != nil {
		return "", err
	}
	if _, err := m.dst.API.ContainerStart(ctx, m.targetID, client.ContainerStartOptions{CheckpointID: m.rec.Checkpoint}); err != nil {
		return "", fmt.Errorf("restoring %s on %s: %w", m.res.Container, m.dst.Context, err)
	}
	m.runningAt = time.Now()
	return "", nil
}

// dropCheckpoint removes, once the move is done, the checkpoint and what
// carried it from both hosts; trouble is a warning.
func (m *mover) dropCheckpoint(ctx context.Context) {
	name := checkpointVolume(m.rec)
	warn := func(err error) {
		if err != nil {
			m.res.Warnings = append(m.res.Warnings, "removing the checkpoint: "+err.Error())
		}
	}
	_, err := m.src.API.VolumeRemove(ctx, name, client.VolumeRemoveOptions{Force: true})
	warn(err)
	_, err = m.dst.API.VolumeRemove(ctx, name, client.VolumeRemoveOptions{Force: true})
	warn(err)
	_, err = m.src.API.CheckpointRemove(ctx, m.ctr.ID, client.CheckpointRemoveOptions{CheckpointID: m.rec.Checkpoint})
	warn(err)
	_, err = m.dst.API.CheckpointRemove(ctx, m.targetID, client.CheckpointRemoveOptions{CheckpointID: m.rec.Checkpoint})
	warn(err)
	m.rec.Exports = removeOne(m.rec.Exports, name)
	m.rec.Volumes = removeOne(m.rec.Volumes, name)
	warn(m.rec.save(ctx, m.src.API))
}

func removeOne(list []string, s string) []string {
	out := list[:0:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}
