package migrate

// The start phase: the container runs on the target.

import (
	"context"
	"time"

	"github.com/moby/moby/client"
)

// start starts the target container if the source one ran. The record
// says so first: from then on the container may run on the target, and
// a rollback must find out before it starts the source one.
func (m *mover) start(ctx context.Context) (string, error) {
	if !m.rec.WasRunning {
		return "was not running on " + m.src.Context + ": left stopped", nil
	}
	m.rec.Starting = true
	if err := m.rec.save(ctx, m.src.API); err != nil {
		return "", err
	}
	_, err := m.dst.API.ContainerStart(ctx, m.targetID, client.ContainerStartOptions{})
	m.runningAt = time.Now()
	return "", err
}
