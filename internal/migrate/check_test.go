package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/plugin"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/api/types/volume"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// engine is a scripted engine: the checks are pure decisions over what
// engines answer. Calls it does not script panic.
type engine struct {
	client.APIClient
	down       bool
	arch       string
	plugins    []plugin.Plugin
	containers map[string]container.InspectResponse
	images     map[string]bool
	running    []container.Summary
	networks   map[string]network.Inspect
	free       float64 // bytes free for volumes; 0: the plugin does not say
	volumes    []string
	closed     bool
}

func (e *engine) Close() error {
	e.closed = true
	return nil
}

var errDown = errors.New("connection refused")

func (e *engine) Ping(context.Context, client.PingOptions) (client.PingResult, error) {
	if e.down {
		return client.PingResult{}, errDown
	}
	return client.PingResult{}, nil
}

func (e *engine) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	return client.SystemInfoResult{Info: system.Info{OSType: "linux", Architecture: e.arch}}, nil
}

func (e *engine) PluginList(context.Context, client.PluginListOptions) (client.PluginListResult, error) {
	return client.PluginListResult{Items: e.plugins}, nil
}

func (e *engine) ContainerInspect(_ context.Context, name string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	c, ok := e.containers[name]
	if !ok {
		return client.ContainerInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such container")
	}
	return client.ContainerInspectResult{Container: c}, nil
}

func (e *engine) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	if !e.images[ref] {
		return client.ImageInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such image")
	}
	return client.ImageInspectResult{}, nil
}

func (e *engine) ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error) {
	return client.ContainerListResult{Items: e.running}, nil
}

func (e *engine) NetworkInspect(_ context.Context, name string, _ client.NetworkInspectOptions) (client.NetworkInspectResult, error) {
	n, ok := e.networks[name]
	if !ok {
		return client.NetworkInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such network")
	}
	return client.NetworkInspectResult{Network: n}, nil
}

func (e *engine) VolumeInspect(_ context.Context, name string, _ client.VolumeInspectOptions) (client.VolumeInspectResult, error) {
	if slices.Contains(e.volumes, name) {
		return client.VolumeInspectResult{Volume: volume.Volume{Name: name}}, nil
	}
	if name != volstatus.HostInfo || e.free == 0 {
		return client.VolumeInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such volume")
	}
	return client.VolumeInspectResult{Volume: volume.Volume{Status: map[string]any{"free_bytes": e.free}}}, nil
}

func cargo(enabled bool) []plugin.Plugin {
	return []plugin.Plugin{{Name: "cargo:latest", Enabled: enabled}}
}

func web(mounts ...container.MountPoint) container.InspectResponse {
	return container.InspectResponse{Name: "/web", Image: "sha256:img", Mounts: mounts, Config: &container.Config{Image: "app:1"}}
}

func TestCheckMove(t *testing.T) {
	vol := container.MountPoint{Type: mount.TypeVolume, Name: "data", Driver: "cargo:latest", Destination: "/data"}
	bind := container.MountPoint{Type: mount.TypeBind, Source: "/etc/app", Destination: "/conf"}
	local := container.MountPoint{Type: mount.TypeVolume, Name: "cache", Driver: "local", Destination: "/cache"}
	tmpfs := container.MountPoint{Type: mount.TypeTmpfs, Destination: "/tmp"}
	good := func() (*engine, *engine) {
		src := &engine{arch: "x86_64", plugins: cargo(true), containers: map[string]container.InspectResponse{"web": web(vol, tmpfs)}, images: map[string]bool{"sha256:img": true}}
		dst := &engine{arch: "x86_64", plugins: cargo(true), images: map[string]bool{"sha256:img": true}}
		return src, dst
	}
	tests := []struct {
		name      string
		change    func(src, dst *engine, o *CheckOptions)
		failed    string // the failing check, "" for none
		detail    string
		imageCopy bool
		actions   string
	}{
		{name: "movable", actions: "/data federate,/tmp recreate"},
		{name: "source down", change: func(s, _ *engine, _ *CheckOptions) { s.down = true }, failed: "source engine reachable", detail: `docker context "src"`},
		{name: "target down", change: func(_, d *engine, _ *CheckOptions) { d.down = true }, failed: "target engine reachable", detail: `docker context "dst"`},
		{name: "no container", change: func(s, _ *engine, _ *CheckOptions) { delete(s.containers, "web") }, failed: "container exists", detail: `no container "web" on src`},
		{name: "no plugin on target", change: func(_, d *engine, _ *CheckOptions) { d.plugins = nil }, failed: "cargo plugin on target", detail: "docker --context dst plugin install"},
		{name: "no plugin on target, the source's installed from a registry", change: func(s, d *engine, _ *CheckOptions) {
			s.plugins = []plugin.Plugin{{Name: "cargo:latest", Enabled: true, PluginReference: "reg.example:5000/cargo:latest"}}
			d.plugins = nil
		}, failed: "cargo plugin on target", detail: "plugin install --grant-all-permissions --alias cargo reg.example:5000/cargo:latest"},
		{name: "plugin disabled", change: func(_, d *engine, _ *CheckOptions) { d.plugins = cargo(false) }, failed: "cargo plugin on target", detail: "docker --context dst plugin enable cargo:latest"},
		{name: "other architecture", change: func(_, d *engine, _ *CheckOptions) { d.arch = "aarch64" }, failed: "same OS and architecture", detail: "linux/aarch64"},
		{name: "name taken", change: func(_, d *engine, _ *CheckOptions) { d.containers = map[string]container.InspectResponse{"web": web()} }, failed: "name free on target", detail: `already has a container named "web"`},
		{name: "bind mount", change: func(s, _ *engine, _ *CheckOptions) { s.containers["web"] = web(vol, bind) }, failed: "every mount can move", detail: "bind mount /etc/app:/conf cannot move"},
		{name: "bind mount skipped", change: func(s, _ *engine, o *CheckOptions) { s.containers["web"] = web(vol, bind); o.SkipBindMounts = true }, actions: "/data federate,/conf skip"},
		{name: "local volume", change: func(s, _ *engine, _ *CheckOptions) { s.containers["web"] = web(local) }, actions: "/cache federate"},
		{name: "local volume in use elsewhere", change: func(s, _ *engine, _ *CheckOptions) {
			s.containers["web"] = web(local)
			s.running = []container.Summary{{ID: "other", Names: []string{"/worker"}}}
		}, failed: "local volumes not shared", detail: "also used by running container worker"},
		{name: "other driver", change: func(s, _ *engine, _ *CheckOptions) {
			s.containers["web"] = web(container.MountPoint{Type: mount.TypeVolume, Name: "n", Driver: "nfs", Destination: "/n"})
		}, failed: "every mount can move", detail: `volume "n" at /n uses the "nfs" driver`},
		{name: "shared network namespace", change: func(s, _ *engine, _ *CheckOptions) {
			c := web(vol)
			c.HostConfig = &container.HostConfig{NetworkMode: "container:db"}
			s.containers["web"] = c
		}, failed: "networks can move", detail: "shares the network of container db"},
		{name: "volumes from another container", change: func(s, _ *engine, _ *CheckOptions) {
			c := web(vol)
			c.HostConfig = &container.HostConfig{VolumesFrom: []string{"data-only"}, IpcMode: "container:db"}
			s.containers["web"] = c
		}, failed: "no ties to other containers", detail: "--volumes-from data-only, --ipc container:db"},
		{name: "swarm task", change: func(s, _ *engine, _ *CheckOptions) {
			c := web(vol)
			c.Config.Labels = map[string]string{"com.docker.swarm.task.id": "xyz", "com.docker.swarm.service.name": "shop_web"}
			s.containers["web"] = c
		}, failed: "not a Swarm task", detail: "a task of Swarm service shop_web"},
		{name: "swarm network", change: func(s, _ *engine, _ *CheckOptions) {
			c := web(vol)
			c.HostConfig = &container.HostConfig{NetworkMode: "front"}
			c.NetworkSettings = &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{"front": {}}}
			s.containers["web"] = c
			s.networks = map[string]network.Inspect{"front": {Network: network.Network{Scope: "swarm"}}}
		}, failed: "networks can move", detail: "network front is a swarm network"},
		{name: "published port taken", change: func(s, d *engine, _ *CheckOptions) {
			c := web(vol)
			c.HostConfig = &container.HostConfig{PortBindings: network.PortMap{network.MustParsePort("80/tcp"): {{HostPort: "8080"}}}}
			s.containers["web"] = c
			d.running = []container.Summary{{ID: "x", Names: []string{"/proxy"}, Ports: []container.PortSummary{{PrivatePort: 80, PublicPort: 8080, Type: "tcp"}}}}
		}, failed: "published ports free on target", detail: "8080/tcp is published by container proxy"},
		{name: "image copied", change: func(_, d *engine, _ *CheckOptions) { d.images = nil }, imageCopy: true, actions: "/data federate,/tmp recreate"},
		{name: "tmpfs from --tmpfs", change: func(s, _ *engine, _ *CheckOptions) {
			c := web(vol)
			c.HostConfig = &container.HostConfig{Tmpfs: map[string]string{"/run": "size=1m"}}
			s.containers["web"] = c
		}, actions: "/data federate,/run recreate"},
		{name: "volume name taken on target", change: func(_, d *engine, _ *CheckOptions) { d.volumes = []string{"data"} },
			failed: "volume names free on target", detail: "dst already has volume(s) data"},
		{name: "disk enough", change: func(s, d *engine, _ *CheckOptions) {
			c := web(vol)
			c.SizeRw = ptr(int64(1000))
			s.containers["web"] = c
			d.free = 5000
		}, actions: "/data federate"},
		{name: "disk full", change: func(s, d *engine, _ *CheckOptions) {
			c := web(vol)
			c.SizeRw = ptr(int64(1 << 30))
			s.containers["web"] = c
			d.free = 5000
		}, failed: "enough disk on target", detail: "dst has 4.883KiB free but the writable layer need 1GiB"},
		{name: "disk full, forced", change: func(s, d *engine, o *CheckOptions) {
			c := web(vol)
			c.SizeRw = ptr(int64(1 << 30))
			s.containers["web"] = c
			d.free = 5000
			o.Force = true
		}, actions: "/data federate"},
		{name: "forced is no help for a bind mount", change: func(s, _ *engine, o *CheckOptions) { s.containers["web"] = web(vol, bind); o.Force = true }, failed: "every mount can move", detail: "bind mount"},
		{name: "image nowhere", change: func(s, d *engine, _ *CheckOptions) { d.images, s.images = nil, nil }, failed: "image on target", detail: "lacks image app:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := good()
			var opts CheckOptions
			if tt.change != nil {
				tt.change(src, dst, &opts)
			}
			r, err := checkMove(context.Background(), Engine{"src", src}, Engine{"dst", dst}, "web", opts, nil)
			if err != nil {
				t.Fatal(err)
			}
			failed := r.Failed()
			if tt.failed == "" {
				if len(failed) > 0 || !r.OK() {
					t.Fatalf("failed: %+v", failed)
				}
			} else if len(failed) != 1 || failed[0].Name != tt.failed || !strings.Contains(failed[0].Detail, tt.detail) {
				t.Fatalf("failed %+v, want %q containing %q", failed, tt.failed, tt.detail)
			}
			if r.ImageCopy != tt.imageCopy {
				t.Errorf("image copy %v", r.ImageCopy)
			}
			if tt.actions != "" {
				var got []string
				for _, m := range r.Mounts {
					got = append(got, fmt.Sprintf("%s %s", m.Destination, m.Action))
				}
				if strings.Join(got, ",") != tt.actions {
					t.Errorf("mount actions %v, want %s", got, tt.actions)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
