package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// Endpoint is one engine of a move, by its docker context.
type Endpoint struct {
	Context string
	API     client.APIClient
}

// Side is the endpoint as the checks see it.
func (e Endpoint) Side() Side { return Side{Context: e.Context, Engine: e.API} }

// Phase is one step of a move and how long it took.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
	Detail   string        `json:"detail,omitempty"`
}

// Result describes a finished move.
type Result struct {
	Container string  `json:"container"`
	Source    string  `json:"source"`
	Target    string  `json:"target"`
	Phases    []Phase `json:"phases"`
	// Downtime runs from the stop on the source to the start on the target.
	Downtime time.Duration `json:"downtime_ns"`
	// Running is false when the container was not running on the source:
	// it is then left stopped on the target too.
	Running bool     `json:"running"`
	Volumes []string `json:"volumes"`
	// Warnings tell what went wrong without stopping the move, such as a
	// failed post-restore hook.
	Warnings []string `json:"warnings,omitempty"`
}

// Progress hears of a move's phases as they start and end.
type Progress interface {
	PhaseStarted(name string)
	PhaseDone(p Phase)
}

// ExportSuffix names the export volume of a volume being moved.
const ExportSuffix = ".cargo-export"

// failAfter lets the tests inject a failure after a phase, to exercise
// the rollback on real engines. Not for users.
var failAfter = os.Getenv("CARGO_MIGRATE_TEST_FAIL_AFTER")

// mover holds one move's state, so a failure can be rolled back.
type mover struct {
	src, dst Endpoint
	opts     Options
	progress Progress
	res      *Result
	ctr      container.InspectResponse

	stopped  bool
	layer    *layer // the source's changes outside its volumes
	report   *Report
	exports  []string // export volumes created on the source
	volumes  []string // volumes created on the target
	networks []string // networks created on the target
	targetID string
}

// Move moves container name from src to dst: check, image, stop, layer,
// volumes, create, start. progress, when not nil, hears of each phase.
// Any failure once the move changed something is rolled back: what was
// made on the target is removed, the exports are closed, and the source
// container starts again if it ran.
func Move(ctx context.Context, src, dst Endpoint, name string, opts Options, progress Progress) (*Result, error) {
	m := &mover{src: src, dst: dst, opts: opts, progress: progress,
		res: &Result{Container: name, Source: src.Context, Target: dst.Context}}
	err := m.run(ctx)
	m.layer.Close()
	if err != nil && m.touched() {
		// The caller's context may be what failed (Ctrl-C): roll back on
		// a fresh one.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		rerr := m.rollback(rctx)
		if herr := m.hook(rctx, HookFailedRestore, opts.Hooks.FailedRestore, err); herr != nil {
			rerr = errors.Join(rerr, herr)
		}
		if rerr != nil {
			return nil, fmt.Errorf("%w; rolling back also failed: %v", err, rerr)
		}
		if !m.stopped {
			return nil, fmt.Errorf("%w; rolled back: %s is left on %s as it was", err, m.res.Container, src.Context)
		}
		return nil, fmt.Errorf("%w; rolled back: %s runs on %s again", err, m.res.Container, src.Context)
	}
	return m.res, err
}

func (m *mover) phase(ctx context.Context, name string, do func(ctx context.Context) (string, error)) error {
	start := time.Now()
	if m.progress != nil {
		m.progress.PhaseStarted(name)
	}
	detail, err := do(ctx)
	if err == nil && failAfter == name {
		err = fmt.Errorf("failure injected after %s", name)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	p := Phase{Name: name, Duration: time.Since(start), Detail: detail}
	m.res.Phases = append(m.res.Phases, p)
	if m.progress != nil {
		m.progress.PhaseDone(p)
	}
	return nil
}

func (m *mover) run(ctx context.Context) error {
	if err := m.phase(ctx, "check", func(ctx context.Context) (string, error) {
		r, err := CheckMove(ctx, m.src.Side(), m.dst.Side(), m.res.Container, m.opts)
		if err != nil {
			return "", err
		}
		m.report = r
		var msgs []string
		for _, c := range r.Failed() {
			msgs = append(msgs, c.Name+": "+c.Detail)
		}
		for _, c := range r.Checks {
			if c.Skipped {
				m.res.Warnings = append(m.res.Warnings, c.Name+": "+c.Detail)
			}
		}
		if len(msgs) > 0 {
			return "", fmt.Errorf("%s cannot move to %s: %s", m.res.Container, m.dst.Context, strings.Join(msgs, "; "))
		}
		m.res.Container = r.Container
		insp, err := m.src.API.ContainerInspect(ctx, r.Container, client.ContainerInspectOptions{})
		if err != nil {
			return "", err
		}
		m.ctr = insp.Container
		return "", nil
	}); err != nil {
		return err
	}
	if err := m.phase(ctx, "image", func(ctx context.Context) (string, error) {
		if !m.report.ImageCopy {
			return "present on " + m.dst.Context, nil
		}
		return m.copyImage(ctx)
	}); err != nil {
		return err
	}
	stopAt := time.Now()
	if err := m.phase(ctx, "stop", func(ctx context.Context) (string, error) {
		if !m.ctr.State.Running {
			return "was not running", nil
		}
		m.stopped = true
		_, err := m.src.API.ContainerStop(ctx, m.ctr.ID, client.ContainerStopOptions{})
		return "", err
	}); err != nil {
		return err
	}
	if err := m.phase(ctx, "layer", func(ctx context.Context) (string, error) {
		var err error
		m.layer, err = m.captureLayer(ctx)
		if err != nil {
			return "", err
		}
		return m.layer.String(), nil
	}); err != nil {
		return err
	}
	if err := m.phase(ctx, "volumes", m.moveVolumes); err != nil {
		return err
	}
	if err := m.hook(ctx, HookPreRestore, m.opts.Hooks.PreRestore, nil); err != nil {
		return err
	}
	if err := m.phase(ctx, "create", func(ctx context.Context) (string, error) {
		if err := m.create(ctx); err != nil {
			return "", err
		}
		return "", m.applyLayer(ctx, m.layer)
	}); err != nil {
		return err
	}
	if err := m.phase(ctx, "start", func(ctx context.Context) (string, error) {
		if !m.stopped {
			return "was not running on " + m.src.Context + ": left stopped", nil
		}
		_, err := m.dst.API.ContainerStart(ctx, m.targetID, client.ContainerStartOptions{})
		return "", err
	}); err != nil {
		return err
	}
	if m.stopped {
		m.res.Downtime = time.Since(stopAt)
		m.res.Running = true
	}
	if err := m.hook(ctx, HookPostRestore, m.opts.Hooks.PostRestore, nil); err != nil {
		m.res.Warnings = append(m.res.Warnings, err.Error())
	}
	return nil
}

// hook runs one of the user's hooks, if set.
func (m *mover) hook(ctx context.Context, which, command string, cause error) error {
	out := m.opts.HookOutput
	if out == nil {
		out = io.Discard
	}
	env := HookEnv{Container: m.res.Container, ContainerID: m.ctr.ID, Source: m.src.Context, Target: m.dst.Context}
	if cause != nil {
		env.Error = cause.Error()
	}
	return runHook(ctx, which, command, env, out)
}

// mountPath reports whether p is a mount destination or one of the
// directories the engine made to hold one.
func mountPath(p string, dests []string) bool {
	for _, d := range dests {
		if p == d || strings.HasPrefix(d, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// mountsOf lists a container's mounts, the --tmpfs ones included.
func mountsOf(ctr container.InspectResponse) []container.MountPoint {
	ms := slices.Clone(ctr.Mounts)
	if ctr.HostConfig != nil {
		for dst := range ctr.HostConfig.Tmpfs {
			ms = append(ms, container.MountPoint{Type: mount.TypeTmpfs, Destination: dst})
		}
	}
	return ms
}

// moveVolumes opens an export of each cargo volume on the source and
// creates its federated twin, of the same name, on the target.
func (m *mover) moveVolumes(ctx context.Context) (string, error) {
	for _, p := range m.report.Mounts {
		if p.Action != "federate" {
			continue
		}
		ctrl := p.Name + ExportSuffix
		opts := map[string]string{"export": p.Name, "to": m.dst.Context}
		if p.Driver == "local" {
			opts["driver"] = "local"
		}
		if _, err := m.src.API.VolumeCreate(ctx, client.VolumeCreateOptions{Name: ctrl, Driver: PluginName, DriverOpts: opts}); err != nil {
			return "", fmt.Errorf("opening an export of volume %s on %s: %w", p.Name, m.src.Context, err)
		}
		m.exports = append(m.exports, ctrl)
		v, err := m.src.API.VolumeInspect(ctx, ctrl, client.VolumeInspectOptions{})
		if err != nil {
			return "", err
		}
		ticket, _ := v.Volume.Status["ticket"].(string)
		if ticket == "" {
			return "", fmt.Errorf("the export of volume %s on %s has no ticket", p.Name, m.src.Context)
		}
		if _, err := m.dst.API.VolumeCreate(ctx, client.VolumeCreateOptions{Name: p.Name, Driver: PluginName,
			DriverOpts: map[string]string{"from": ticket, "context": m.src.Context}}); err != nil {
			return "", fmt.Errorf("creating volume %s on %s: %w", p.Name, m.dst.Context, err)
		}
		m.volumes = append(m.volumes, p.Name)
		m.res.Volumes = append(m.res.Volumes, p.Name)
	}
	if len(m.volumes) == 0 {
		return "none", nil
	}
	return strings.Join(m.volumes, ", ") + " (federated; copying in the background)", nil
}

// create makes the container on the target with the source's
// configuration, leaving out what merely repeats the image's defaults.
func (m *mover) create(ctx context.Context) error {
	cfg := *m.ctr.Config
	// The engine names a container's host after its short ID unless told
	// otherwise; the target container gets its own.
	if len(m.ctr.ID) >= 12 && cfg.Hostname == m.ctr.ID[:12] {
		cfg.Hostname = ""
	}
	if img, err := m.src.API.ImageInspect(ctx, m.ctr.Image); err == nil && img.Config != nil {
		withoutImageDefaults(&cfg, img.Config)
	}
	hc := *m.ctr.HostConfig
	if m.opts.SkipBindMounts {
		hc.Binds = slices.DeleteFunc(slices.Clone(hc.Binds), func(b string) bool { return strings.HasPrefix(b, "/") })
		hc.Mounts = slices.DeleteFunc(slices.Clone(hc.Mounts), func(mt mount.Mount) bool { return mt.Type == mount.TypeBind })
	}
	retargetVolumes(&hc, m.report.Mounts)
	made, err := m.ensureNetworks(ctx)
	m.networks = append(m.networks, made...)
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
	m.targetID = resp.ID
	if len(nets) > 1 {
		return m.connectNetworks(ctx, nets[1:])
	}
	return nil
}

// retargetVolumes points the target container's volume mounts at the
// federated cargo volumes made for them: local-driver mounts name the
// cargo driver instead, and anonymous volumes are named.
func retargetVolumes(hc *container.HostConfig, plans []MountPlan) {
	if hc.VolumeDriver == "local" {
		hc.VolumeDriver = ""
	}
	hc.Mounts = slices.Clone(hc.Mounts)
	for i, mt := range hc.Mounts {
		if mt.Type != mount.TypeVolume || mt.VolumeOptions == nil || mt.VolumeOptions.DriverConfig == nil {
			continue
		}
		if mt.VolumeOptions.DriverConfig.Name == "local" {
			vo := *mt.VolumeOptions
			vo.DriverConfig = nil
			hc.Mounts[i].VolumeOptions = &vo
		}
	}
	hc.Binds = slices.Clone(hc.Binds)
	for _, p := range plans {
		if p.Action != "federate" || !p.Anonymous {
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

// rollback undoes what the move did after the stop.
func (m *mover) rollback(ctx context.Context) error {
	var errs []error
	if m.targetID != "" {
		if _, err := m.dst.API.ContainerRemove(ctx, m.targetID, client.ContainerRemoveOptions{Force: true}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, v := range m.volumes {
		if _, err := m.dst.API.VolumeRemove(ctx, v, client.VolumeRemoveOptions{Force: true}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range m.networks {
		if _, err := m.dst.API.NetworkRemove(ctx, n, client.NetworkRemoveOptions{}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range m.exports {
		if _, err := m.src.API.VolumeRemove(ctx, c, client.VolumeRemoveOptions{Force: true}); err != nil {
			errs = append(errs, err)
		}
	}
	if m.stopped {
		if _, err := m.src.API.ContainerStart(ctx, m.ctr.ID, client.ContainerStartOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("starting %s on %s again: %w", m.res.Container, m.src.Context, err))
		}
	}
	return errors.Join(errs...)
}

// touched reports whether the move changed anything to roll back.
func (m *mover) touched() bool {
	return m.stopped || m.targetID != "" || len(m.volumes) > 0 || len(m.exports) > 0 || len(m.networks) > 0
}
