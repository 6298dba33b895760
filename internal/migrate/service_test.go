package migrate

import (
	"context"
	"fmt"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// fakeContexts serves the engines of docker contexts by name.
type fakeContexts struct {
	current string
	names   []string
	engines map[string]client.APIClient
}

func (c *fakeContexts) Current() string          { return c.current }
func (c *fakeContexts) Names() ([]string, error) { return c.names, nil }

func (c *fakeContexts) Client(name string) (client.APIClient, error) {
	if e, ok := c.engines[name]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("docker context %q: no such host", name)
}

func TestServiceCheck(t *testing.T) {
	src := &engine{arch: "x86_64", plugins: cargo(true), containers: map[string]container.InspectResponse{"web": web()}, images: map[string]bool{"sha256:img": true}}
	dst := &engine{arch: "x86_64", plugins: cargo(true), images: map[string]bool{"sha256:img": true}}
	svc := NewService(&fakeContexts{current: "left", engines: map[string]client.APIClient{"left": src, "right": dst}})

	r, err := svc.Check(context.Background(), "web", CheckOptions{To: "right"})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Source != "left" || r.Target != "right" {
		t.Errorf("report %+v", r)
	}
	if !src.closed || !dst.closed {
		t.Errorf("clients left open: source %v, target %v", !src.closed, !dst.closed)
	}

	_, err = svc.Check(context.Background(), "web", CheckOptions{To: "left"})
	if want := "--to left is the current context: choose another one (see `docker context ls`)"; err == nil || err.Error() != want {
		t.Errorf("--to the current context: %v, want %s", err, want)
	}
	src.closed = false
	if _, err := svc.Move(context.Background(), "web", MoveOptions{CheckOptions: CheckOptions{To: "nowhere"}}); err == nil {
		t.Error("a move to a missing context went ahead")
	}
	if !src.closed {
		t.Error("the source's client was left open when the target's failed")
	}
}
