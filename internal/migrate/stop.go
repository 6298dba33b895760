package migrate

// The stop phase: the source container stops, and the downtime starts.

import (
	"context"
	"time"

	"github.com/moby/moby/client"
)

// stop stops the source container, if it runs; a stopped one moves as it
// is and stays stopped on the target.
func (m *mover) stop(ctx context.Context) (string, error) {
	m.stopAt = time.Now()
	if !m.ctr.State.Running {
		return "was not running", nil
	}
	m.stopped = true
	_, err := m.src.API.ContainerStop(ctx, m.ctr.ID, client.ContainerStopOptions{})
	return "", err
}
