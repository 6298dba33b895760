package migrate

import (
	"slices"
	"strings"
	"testing"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestWithoutImageDefaults(t *testing.T) {
	img := &dockerspec.DockerOCIImageConfig{ImageConfig: ocispec.ImageConfig{
		Cmd: []string{"sh"}, Entrypoint: []string{"/init"}, WorkingDir: "/app", User: "app",
		Env: []string{"PATH=/bin", "LANG=C"}, Labels: map[string]string{"maintainer": "x", "tier": "img"},
	}}
	cfg := &container.Config{
		Cmd: []string{"sh"}, Entrypoint: []string{"/init"}, WorkingDir: "/srv", User: "app",
		Env:    []string{"PATH=/bin", "LANG=C", "APP_MODE=prod"},
		Labels: map[string]string{"maintainer": "x", "tier": "front"},
	}
	withoutImageDefaults(cfg, img)
	if cfg.Cmd != nil || cfg.Entrypoint != nil || cfg.User != "" {
		t.Errorf("image defaults kept: %+v", cfg)
	}
	if cfg.WorkingDir != "/srv" || !slices.Equal(cfg.Env, []string{"APP_MODE=prod"}) || len(cfg.Labels) != 1 || cfg.Labels["tier"] != "front" {
		t.Errorf("overrides lost: %+v", cfg)
	}
}

func TestRetargetVolumes(t *testing.T) {
	anon := strings.Repeat("ab", 32)
	hc := &container.HostConfig{
		VolumeDriver: "local",
		Binds:        []string{"cache:/cache", "data:/data:ro"},
		Mounts: []mount.Mount{
			{Type: mount.TypeVolume, Source: "logs", Target: "/logs", VolumeOptions: &mount.VolumeOptions{DriverConfig: &mount.Driver{Name: "local"}}},
			{Type: mount.TypeVolume, Target: "/spool"},
		},
	}
	retargetVolumes(hc, []MountPlan{
		{Action: "federate", Name: "cache", Driver: "local", Destination: "/cache"},
		{Action: "federate", Name: "logs", Driver: "local", Destination: "/logs"},
		{Action: "federate", Name: anon, Driver: "local", Destination: "/spool", Anonymous: true},
		{Action: "federate", Name: anon + "x", Driver: "local", Destination: "/var/lib/app", Anonymous: true},
	})
	if hc.VolumeDriver != "" || hc.Mounts[0].VolumeOptions.DriverConfig != nil || hc.Mounts[1].Source != anon {
		t.Errorf("mounts not retargeted: %+v", hc)
	}
	if want := []string{"cache:/cache", "data:/data:ro", anon + "x:/var/lib/app"}; !slices.Equal(hc.Binds, want) {
		t.Errorf("binds %v, want %v", hc.Binds, want)
	}
}
