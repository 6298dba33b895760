package migrate

// The volumes phase: each volume moves as an export on the source and a
// federated cargo volume, of the same name, on the target, which copies
// it in the background.

import (
	"context"
	"fmt"
	"strings"

	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// moveVolumes opens an export of each cargo volume on the source and
// creates its federated twin, of the same name, on the target.
func (m *mover) moveVolumes(ctx context.Context) (string, error) {
	for _, p := range m.report.Mounts {
		if p.Action != ActionFederate {
			continue
		}
		ctrl := p.Name + ExportSuffix
		// Recorded before it is made: a rollback removes what exists.
		m.rec.Exports = addOnce(m.rec.Exports, ctrl)
		m.rec.Volumes = addOnce(m.rec.Volumes, p.Name)
		if err := m.rec.save(ctx, m.src.API); err != nil {
			return "", err
		}
		opts := map[string]string{"export": p.Name, "to": m.dst.Context}
		if p.Driver == localDriver {
			opts["driver"] = localDriver
		}
		if _, err := m.src.API.VolumeCreate(ctx, client.VolumeCreateOptions{Name: ctrl, Driver: PluginName, DriverOpts: opts}); err != nil {
			return "", fmt.Errorf("opening an export of volume %s on %s: %w", p.Name, m.src.Context, err)
		}
		v, err := m.src.API.VolumeInspect(ctx, ctrl, client.VolumeInspectOptions{})
		if err != nil {
			return "", err
		}
		ticket := volstatus.Parse(v.Volume.Status).Ticket
		if ticket == "" {
			return "", fmt.Errorf("the export of volume %s on %s has no ticket", p.Name, m.src.Context)
		}
		fopts := map[string]string{"from": ticket, "context": m.src.Context}
		if m.rec.WasRunning && !m.opts.Live {
			// The container starts on the target next: its start goes
			// before the background copy. Not for a restore: held so,
			// Engine 20.10 started the container afresh instead of
			// from its checkpoint (tests/live).
			fopts["copy"] = "after-mount"
		}
		if _, err := m.dst.API.VolumeCreate(ctx, client.VolumeCreateOptions{Name: p.Name, Driver: PluginName, DriverOpts: fopts}); err != nil {
			return "", fmt.Errorf("creating volume %s on %s: %w", p.Name, m.dst.Context, err)
		}
		m.res.Volumes = append(m.res.Volumes, p.Name)
	}
	if len(m.res.Volumes) == 0 {
		return "none", nil
	}
	return strings.Join(m.res.Volumes, ", ") + " (federated; copying in the background)", nil
}
