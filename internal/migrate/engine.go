package migrate

import (
	"github.com/moby/moby/client"
)

// Engine is a Docker engine behind a docker context.
type Engine struct {
	// Context names the engine in messages, as the user knows it.
	Context string
	// API is the engine's client. Tests give a fake that embeds
	// client.APIClient and scripts only the calls the code under test
	// makes.
	API client.APIClient
}

// Close closes the engine's client.
func (e Engine) Close() error { return e.API.Close() }

// opener connects to the engine of a docker context by name, "" for the
// current one; the caller closes what it opens.
type opener func(name string) (Engine, error)
