// Package dockerctx makes Docker API clients for named docker contexts, so
// one command can talk to the current engine and to `--to host2` alike.
package dockerctx

import (
	"errors"
	"fmt"
	"slices"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/context/docker"
	"github.com/docker/cli/cli/context/store"
	"github.com/moby/moby/client"
)

// notFound matches the context store's not-found errors.
type notFound interface{ NotFound() }

// Client returns an API client for the named context; the caller closes
// it. The empty name and the CLI's current context give the CLI's own
// client, which honours --context, DOCKER_CONTEXT and DOCKER_HOST; the CLI
// closes that one itself, so its Close here does nothing. The client
// negotiates the API version, so engines from 20.10 on are spoken to in
// their own version.
func Client(cli command.Cli, name string) (client.APIClient, error) {
	if name == "" || name == cli.CurrentContext() {
		return borrowed{cli.Client()}, nil
	}
	return clientFromStore(cli.ContextStore(), name)
}

// borrowed is the CLI's own client, lent to a caller that closes what it
// is given.
type borrowed struct{ client.APIClient }

// Close leaves the client open: it is the CLI's.
func (borrowed) Close() error { return nil }

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

// Contexts is the CLI's docker contexts, reached by name.
type Contexts struct{ cli command.Cli }

// New returns the contexts of cli. The CLI may be initialized later: each
// call asks it afresh.
func New(cli command.Cli) *Contexts { return &Contexts{cli: cli} }

// Current names the current context.
func (c *Contexts) Current() string { return c.cli.CurrentContext() }

// Names lists the context store's contexts. Like `docker context ls`, it
// includes the current context even when the store lacks it.
func (c *Contexts) Names() ([]string, error) {
	metas, err := c.cli.ContextStore().List()
	if err != nil {
		return nil, fmt.Errorf("listing docker contexts: %w", err)
	}
	names := make([]string, 0, len(metas)+1)
	for _, m := range metas {
		names = append(names, m.Name)
	}
	if cur := c.Current(); !slices.Contains(names, cur) {
		names = append(names, cur)
	}
	return names, nil
}

// Client is Client(cli, name): the caller closes it.
func (c *Contexts) Client(name string) (client.APIClient, error) { return Client(c.cli, name) }
