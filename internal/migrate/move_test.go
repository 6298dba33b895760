package migrate

import (
	"slices"
	"testing"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestMountPath(t *testing.T) {
	dests := []string{"/data", "/run/app/cache"}
	for p, want := range map[string]bool{
		"/data": true, "/run": true, "/run/app": true, "/run/app/cache": true,
		"/data2": false, "/etc": false, "/run/other": false, "/": true,
	} {
		if got := mountPath(p, dests); got != want {
			t.Errorf("mountPath(%q) = %v, want %v", p, got, want)
		}
	}
}

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
