package migrate

// The create phase: the container made on the target, like the source's.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// create is the create phase: the container on the target, with the
// source's changes outside its volumes written into it.
func (m *mover) create(ctx context.Context) (string, error) {
	if err := m.createContainer(ctx); err != nil {
		return "", err
	}
	return "", m.applyLayer(ctx, m.layer)
}

// createContainer makes the container on the target with the source's
// configuration, leaving out what merely repeats the image's defaults.
func (m *mover) createContainer(ctx context.Context) error {
	cfg := *m.ctr.Config
	// The engine names a container's host after its short ID unless told
	// otherwise; the target container gets its own.
	if len(m.ctr.ID) >= 12 && cfg.Hostname == m.ctr.ID[:12] {
		cfg.Hostname = ""
	}
	if img, err := m.src.API.ImageInspect(ctx, m.ctr.Image); err == nil && img.Config != nil {
		withoutImageDefaults(&cfg, img.Config)
	}
	// The source's image, also where the target has another under its name.
	cfg.Image = m.targetImage(ctx)
	hc := *m.ctr.HostConfig
	// The source's own policy, which the move set to "no" there.
	hc.RestartPolicy = m.rec.RestartPolicy
	if m.opts.SkipBindMounts {
		hc.Binds = slices.DeleteFunc(slices.Clone(hc.Binds), func(b string) bool { return strings.HasPrefix(b, "/") })
		hc.Mounts = slices.DeleteFunc(slices.Clone(hc.Mounts), func(mt mount.Mount) bool { return mt.Type == mount.TypeBind })
	}
	retargetVolumes(&hc, m.report.Mounts)
	made, err := m.ensureNetworks(ctx)
	for _, n := range made {
		m.rec.Networks = addOnce(m.rec.Networks, n)
	}
	if serr := m.rec.save(ctx, m.src.API); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	nets := userNetworks(m.ctr)
	var netCfg *network.NetworkingConfig
	if len(nets) > 0 {
		netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			nets[0]: endpoint(m.ctr.NetworkSettings.Networks[nets[0]], m.ctr.ID),
		}}
	}
	resp, err := m.dst.API.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &cfg, HostConfig: &hc, NetworkingConfig: netCfg, Name: m.res.Container})
	if err != nil {
		return fmt.Errorf("creating %s on %s: %w", m.res.Container, m.dst.Context, err)
	}
	m.targetID, m.rec.TargetID = resp.ID, resp.ID
	if err := m.rec.save(ctx, m.src.API); err != nil {
		return err
	}
	if len(nets) > 1 {
		return m.connectNetworks(ctx, nets[1:])
	}
	return nil
}

// retargetVolumes points the target container's volume mounts at the
// federated cargo volumes made for them: local-driver mounts name the
// cargo driver instead, and anonymous volumes are named.
func retargetVolumes(hc *container.HostConfig, plans []MountPlan) {
	if hc.VolumeDriver == localDriver {
		hc.VolumeDriver = ""
	}
	hc.Mounts = slices.Clone(hc.Mounts)
	for i, mt := range hc.Mounts {
		if mt.Type != mount.TypeVolume || mt.VolumeOptions == nil || mt.VolumeOptions.DriverConfig == nil {
			continue
		}
		if mt.VolumeOptions.DriverConfig.Name == localDriver {
			vo := *mt.VolumeOptions
			vo.DriverConfig = nil
			hc.Mounts[i].VolumeOptions = &vo
		}
	}
	hc.Binds = slices.Clone(hc.Binds)
	for _, p := range plans {
		if p.Action != ActionFederate || !p.Anonymous {
			continue
		}
		i := slices.IndexFunc(hc.Mounts, func(mt mount.Mount) bool { return mt.Type == mount.TypeVolume && mt.Target == p.Destination })
		if i >= 0 {
			hc.Mounts[i].Source = p.Name
			continue
		}
		hc.Binds = append(hc.Binds, p.Name+":"+p.Destination)
	}
}

// withoutImageDefaults clears the fields of cfg that only repeat the
// image's own configuration, so the target container shows the same
// overrides as the source one.
func withoutImageDefaults(cfg *container.Config, img *dockerspec.DockerOCIImageConfig) {
	if slices.Equal(cfg.Cmd, img.Cmd) {
		cfg.Cmd = nil
	}
	if slices.Equal(cfg.Entrypoint, img.Entrypoint) {
		cfg.Entrypoint = nil
	}
	if cfg.WorkingDir == img.WorkingDir {
		cfg.WorkingDir = ""
	}
	if cfg.User == img.User {
		cfg.User = ""
	}
	cfg.Env = slices.DeleteFunc(slices.Clone(cfg.Env), func(e string) bool { return slices.Contains(img.Env, e) })
	for k, v := range img.Labels {
		if cfg.Labels[k] == v {
			delete(cfg.Labels, k)
		}
	}
}
