package migrate

import (
	"slices"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
)

func TestUserNetworks(t *testing.T) {
	eps := func(names ...string) *container.NetworkSettings {
		m := map[string]*network.EndpointSettings{}
		for _, n := range names {
			m[n] = &network.EndpointSettings{}
		}
		return &container.NetworkSettings{Networks: m}
	}
	tests := []struct {
		name string
		mode string
		nets *container.NetworkSettings
		want []string
	}{
		{"default bridge", "bridge", eps("bridge"), nil},
		{"host", "host", eps("host"), nil},
		{"one user network", "front", eps("front"), []string{"front"}},
		{"the mode's network first", "zeta", eps("alpha", "zeta", "bridge"), []string{"zeta", "alpha"}},
		{"no settings", "none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctr := container.InspectResponse{HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(tt.mode)}, NetworkSettings: tt.nets}
			if got := userNetworks(ctr); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEndpointKeepsWhatTheUserSet(t *testing.T) {
	id := "0123456789abcdef0123"
	ep := endpoint(&network.EndpointSettings{
		Aliases: []string{"web", "0123456789ab"}, Links: []string{"db:db"},
		IPAMConfig: &network.EndpointIPAMConfig{}, NetworkID: "n1", EndpointID: "e1",
	}, id)
	if !slices.Equal(ep.Aliases, []string{"web"}) || !slices.Equal(ep.Links, []string{"db:db"}) || ep.IPAMConfig == nil ||
		ep.NetworkID != "" || ep.EndpointID != "" {
		t.Errorf("endpoint %+v", ep)
	}
	if ep := endpoint(nil, id); ep == nil {
		t.Error("nil endpoint")
	}
}
