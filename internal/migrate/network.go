package migrate

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// builtinNetwork reports whether a network exists on every engine.
func builtinNetwork(name string) bool {
	switch name {
	case "bridge", "host", "none", "default", "":
		return true
	}
	return false
}

// userNetworks lists the container's user-defined networks, sorted, the
// one of its network mode first.
func userNetworks(ctr container.InspectResponse) []string {
	var out []string
	if ctr.NetworkSettings != nil {
		for n := range ctr.NetworkSettings.Networks {
			if !builtinNetwork(n) {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	if ctr.HostConfig != nil {
		if i := slices.Index(out, string(ctr.HostConfig.NetworkMode)); i > 0 {
			out = slices.Insert(slices.Delete(out, i, i+1), 0, string(ctr.HostConfig.NetworkMode))
		}
	}
	return out
}

// checkNetworks refuses network setups that cannot move.
func (r *Report) checkNetworks(ctx context.Context, src Engine, ctr container.InspectResponse) {
	var problems []string
	mode := ""
	if ctr.HostConfig != nil {
		mode = string(ctr.HostConfig.NetworkMode)
	}
	if c, ok := strings.CutPrefix(mode, "container:"); ok {
		problems = append(problems, fmt.Sprintf("it shares the network of container %s, which does not move with it", c))
	}
	nets := userNetworks(ctr)
	for _, n := range nets {
		insp, err := src.API.NetworkInspect(ctx, n, client.NetworkInspectOptions{})
		if err != nil {
			problems = append(problems, fmt.Sprintf("network %s: %v", n, err))
			continue
		}
		if insp.Network.Scope == "swarm" {
			problems = append(problems, fmt.Sprintf("network %s is a swarm network: move swarm services with `docker service update`, not docker migrate", n))
		}
	}
	detail := mode
	if len(nets) > 0 {
		detail = strings.Join(nets, ", ") + " (made on the target where missing)"
	}
	var err error
	if len(problems) > 0 {
		err = fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	r.add("networks can move", err, detail)
}

// checkPorts refuses host ports the target already publishes.
func (r *Report) checkPorts(ctx context.Context, dst Engine, ctr container.InspectResponse) {
	want := map[string]bool{}
	if ctr.HostConfig != nil {
		for p, bs := range ctr.HostConfig.PortBindings {
			for _, b := range bs {
				if b.HostPort != "" && b.HostPort != "0" {
					want[b.HostPort+"/"+string(p.Proto())] = true
				}
			}
		}
	}
	if len(want) == 0 {
		return
	}
	l, err := dst.API.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		r.add("published ports free on target", fmt.Errorf("listing containers on %s: %w", dst.Context, err), "")
		return
	}
	var clash []string
	for _, c := range l.Items {
		for _, p := range c.Ports {
			if k := fmt.Sprintf("%d/%s", p.PublicPort, p.Type); p.PublicPort != 0 && want[k] {
				clash = append(clash, fmt.Sprintf("%s is published by container %s", k, strings.TrimPrefix(firstName(c.Names), "/")))
			}
		}
	}
	slices.Sort(clash)
	clash = slices.Compact(clash)
	var perr error
	if len(clash) > 0 {
		perr = fmt.Errorf("on %s, %s", dst.Context, strings.Join(clash, "; "))
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	})
	r.add("published ports free on target", perr, strings.Join(keys, ", "))
}

func firstName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// ensureNetworks makes the container's user-defined networks on the
// target where missing, like the source's: same driver, options, labels
// and flags. The subnet is copied only when the container has a fixed
// address in it; else the target picks one, as it does for any network.
func (m *mover) ensureNetworks(ctx context.Context) ([]string, error) {
	var made []string
	for _, n := range userNetworks(m.ctr) {
		_, err := m.dst.API.NetworkInspect(ctx, n, client.NetworkInspectOptions{})
		if err == nil {
			continue
		}
		if !cerrdefs.IsNotFound(err) {
			return made, fmt.Errorf("asking %s for network %s: %w", m.dst.Context, n, err)
		}
		insp, err := m.src.API.NetworkInspect(ctx, n, client.NetworkInspectOptions{})
		if err != nil {
			return made, fmt.Errorf("reading network %s on %s: %w", n, m.src.Context, err)
		}
		sn := insp.Network
		opts := client.NetworkCreateOptions{Driver: sn.Driver, Options: sn.Options, Labels: sn.Labels,
			Internal: sn.Internal, Attachable: sn.Attachable}
		if sn.EnableIPv6 {
			opts.EnableIPv6 = &sn.EnableIPv6
		}
		ipam := sn.IPAM
		if ep := m.ctr.NetworkSettings.Networks[n]; ep == nil || ep.IPAMConfig == nil {
			ipam.Config = nil
		}
		opts.IPAM = &ipam
		if _, err := m.dst.API.NetworkCreate(ctx, n, opts); err != nil {
			return made, fmt.Errorf("creating network %s on %s: %w", n, m.dst.Context, err)
		}
		made = append(made, n)
	}
	return made, nil
}

// endpoint keeps what the user configured of an endpoint, dropping what
// the source engine assigned (addresses, IDs, the short-ID alias).
func endpoint(ep *network.EndpointSettings, ctrID string) *network.EndpointSettings {
	if ep == nil {
		return &network.EndpointSettings{}
	}
	short := ctrID
	if len(short) > 12 {
		short = short[:12]
	}
	return &network.EndpointSettings{
		IPAMConfig: ep.IPAMConfig,
		Links:      ep.Links,
		Aliases:    slices.DeleteFunc(slices.Clone(ep.Aliases), func(a string) bool { return a == short }),
		DriverOpts: ep.DriverOpts,
		GwPriority: ep.GwPriority,
	}
}

// connectNetworks attaches the created target container to its further
// user-defined networks (create takes only one on older engines).
func (m *mover) connectNetworks(ctx context.Context, nets []string) error {
	for _, n := range nets {
		if _, err := m.dst.API.NetworkConnect(ctx, n, client.NetworkConnectOptions{
			Container: m.targetID, EndpointConfig: endpoint(m.ctr.NetworkSettings.Networks[n], m.ctr.ID),
		}); err != nil {
			return fmt.Errorf("connecting %s to network %s on %s: %w", m.res.Container, n, m.dst.Context, err)
		}
	}
	return nil
}
