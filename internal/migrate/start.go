package migrate

// The start phase: the container runs on the target.

import (
	"context"

	"github.com/moby/moby/client"
)

// start starts the target container if the source one ran.
func (m *mover) start(ctx context.Context) (string, error) {
	if !m.stopped {
		return "was not running on " + m.src.Context + ": left stopped", nil
	}
	_, err := m.dst.API.ContainerStart(ctx, m.targetID, client.ContainerStartOptions{})
	return "", err
}
