// Package dockerctx makes Docker API clients for named docker contexts, so
// one command can talk to the current engine and to `--to host2` alike.
package dockerctx

import (
	"errors"
	"fmt"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/context/docker"
	"github.com/docker/cli/cli/context/store"
	"github.com/moby/moby/client"
)

// notFound matches the context store's not-found errors.
type notFound interface{ NotFound() }

// Client returns an API client for the named context. The empty name and
// the CLI's current context reuse the CLI's own client, which honours
// --context, DOCKER_CONTEXT and DOCKER_HOST. The client negotiates the API
// version, so engines from 20.10 on are spoken to in their own version.
func Client(cli command.Cli, name string) (client.APIClient, error) {
	if name == "" || name == cli.CurrentContext() {
		return cli.Client(), nil
	}
	return clientFromStore(cli.ContextStore(), name)
}

func clientFromStore(s store.Reader, name string) (*client.Client, error) {
	meta, err := s.GetMetadata(name)
	if err != nil {
		var nf notFound
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("docker context %q not found: create it with `docker context create %s --docker host=ssh://user@%s` (see `docker context ls`)", name, name, name)
		}
		return nil, fmt.Errorf("reading docker context %q: %w", name, err)
	}
	epMeta, err := docker.EndpointFromContext(meta)
	if err != nil {
		return nil, fmt.Errorf("docker context %q: %w", name, err)
	}
	ep, err := docker.WithTLSData(s, name, epMeta)
	if err != nil {
		return nil, fmt.Errorf("docker context %q: loading TLS material: %w", name, err)
	}
	opts, err := ep.ClientOpts()
	if err != nil {
		return nil, fmt.Errorf("docker context %q: %w", name, err)
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker context %q: %w", name, err)
	}
	return c, nil
}
