package migrate

// The stop phase: the move is recorded on the source, the source
// container is kept from starting again behind the move's back, and it
// stops: the downtime starts.

import (
	"context"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// stop records the move, sets the source container's restart policy to
// "no" and stops it if it runs; a stopped one moves as it is and stays
// stopped on the target. With "always", an engine restart would start
// the source container again while its twin runs on the target; the
// record keeps the policy, for the target container and for a rollback.
func (m *mover) stop(ctx context.Context) (string, error) {
	if err := m.hold(ctx); err != nil {
		return "", err
	}
	if !m.rec.WasRunning {
		return "was not running", nil
	}
	_, err := m.src.API.ContainerStop(ctx, m.ctr.ID, client.ContainerStopOptions{})
	return "", err
}

// hold records the move, unless an earlier run did, and keeps the source
// container from restarting behind the move's back. The downtime starts.
func (m *mover) hold(ctx context.Context) error {
	m.stopAt = time.Now()
	if m.rec == nil {
		m.rec = &moveRecord{
			Container: m.res.Container, ContainerID: m.ctr.ID, Source: m.src.Context, Target: m.dst.Context,
			WasRunning: m.ctr.State.Running, RestartPolicy: m.ctr.HostConfig.RestartPolicy,
			Phase: "image", Started: time.Now().UTC(),
		}
		if err := m.rec.save(ctx, m.src.API); err != nil {
			m.rec = nil // nothing changed yet
			return err
		}
	}
	if err := holdRestarts(ctx, m.src.API, m.ctr.ID, m.rec.RestartPolicy); err != nil {
		return fmt.Errorf("keeping %s on %s from restarting during the move: %w", m.res.Container, m.src.Context, err)
	}
	return nil
}

// holdRestarts sets container id's restart policy to "no" unless its own
// policy, p, never restarts it anyway.
func holdRestarts(ctx context.Context, api client.APIClient, id string, p container.RestartPolicy) error {
	if p.Name == "" || p.Name == container.RestartPolicyDisabled {
		return nil
	}
	_, err := api.ContainerUpdate(ctx, id, client.ContainerUpdateOptions{RestartPolicy: &container.RestartPolicy{Name: container.RestartPolicyDisabled}})
	return err
}
