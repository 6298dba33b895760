package migrate

// The check phase: everything that must hold before the source container
// is touched, reported check by check.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// Check is one check's outcome.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Skipped is set for a failed check that --force let pass.
	Skipped bool `json:"skipped,omitempty"`
}

// Checks --force may skip: if they were right, the move fails later and
// rolls back (a port taken, a full disk), or the user accepts the risk
// they name (a local volume written by another container while copied).
var skippable = map[string]bool{
	"local volumes not shared":       true,
	"published ports free on target": true,
	"enough disk on target":          true,
}

// MountPlan says what happens to one of the container's mounts.
type MountPlan struct {
	Type        string `json:"type"`
	Name        string `json:"name,omitempty"`
	Driver      string `json:"driver,omitempty"`
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination"`
	// Anonymous is set for a volume without a name of its own (`-v /dir`
	// or an image's VOLUME); it keeps its generated name on the target.
	Anonymous bool `json:"anonymous,omitempty"`
	// Action is what the move does with the mount: ActionFederate,
	// ActionRecreate or ActionSkip.
	Action string `json:"action"`
}

// What a move does with a mount.
const (
	// ActionFederate: a volume copied lazily into a federated cargo
	// volume of the same name on the target.
	ActionFederate = "federate"
	// ActionRecreate: a tmpfs, empty on the target.
	ActionRecreate = "recreate"
	// ActionSkip: a bind mount left behind (--skip-bind-mounts).
	ActionSkip = "skip"
)

// localDriver is the engine's own volume driver.
const localDriver = "local"

// Report is the check phase's result.
type Report struct {
	Container string      `json:"container"`
	Source    string      `json:"source"`
	Target    string      `json:"target"`
	Checks    []Check     `json:"checks"`
	Mounts    []MountPlan `json:"mounts"`
	// ImageCopy is set when the target lacks the image.
	ImageCopy bool `json:"image_copy"`
	// probeLater is set when a live move's target could not be probed
	// for checkpoints before the image is there.
	probeLater bool
}

// OK reports whether every check passed.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Failed lists the checks that did not pass.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

func (r *Report) add(name string, err error, okDetail string) bool {
	c := Check{Name: name, OK: err == nil, Detail: okDetail}
	if err != nil {
		c.Detail = err.Error()
	}
	r.Checks = append(r.Checks, c)
	return c.OK
}

// PluginName is the name the cargo plugin must be installed under (with
// any tag) for `-d cargo` to reach it.
const PluginName = "cargo"

// check is the move's first phase: it fails unless every check passed
// (or was skipped with --force), and reads the source container.
func (m *mover) check(ctx context.Context) (string, error) {
	if err := m.resume(ctx); err != nil {
		return "", err
	}
	if m.rec != nil && m.rec.Done() {
		return "an earlier run had finished the move", nil
	}
	var owned []string
	if m.rec != nil {
		owned = m.rec.Volumes
	}
	co := m.opts.CheckOptions
	if m.resumed {
		co.Live = false // checked by the interrupted run; its container is stopped now
	}
	r, err := checkMove(ctx, m.src, m.dst, m.res.Container, co, owned)
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
	if m.resumed {
		// The move stopped it and set its policy to "no".
		hc := *m.ctr.HostConfig
		hc.RestartPolicy = m.rec.RestartPolicy
		m.ctr.HostConfig = &hc
		return fmt.Sprintf("finishing the move interrupted after its %s phase", m.rec.Phase), nil
	}
	return "", nil
}

// checkMove runs every check of moving container name from src to dst.
// It changes nothing. An error is returned only when the checks
// themselves cannot run; failed checks are in the report. Volumes named
// in owned are the target's twins an interrupted move already made.
func checkMove(ctx context.Context, src, dst Engine, name string, opts CheckOptions, owned []string) (*Report, error) {
	r := &Report{Container: name, Source: src.Context, Target: dst.Context}
	srcUp := r.add("source engine reachable", reach(ctx, src), "")
	dstUp := r.add("target engine reachable", reach(ctx, dst), "")
	if !srcUp {
		return r, nil
	}
	insp, err := src.API.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	if !r.add("container exists", notFound(err, fmt.Sprintf("no container %q on %s", name, src.Context)), "") {
		return r, nil
	}
	ctr := insp.Container
	r.Container = strings.TrimPrefix(ctr.Name, "/")
	srcRef, err := pluginEnabled(ctx, src, "")
	r.add("cargo plugin on source", err, "")
	r.checkMounts(ctr, opts)
	r.checkShared(ctx, src, ctr)
	r.checkNetworks(ctx, src, ctr)
	r.checkTies(ctr)
	r.checkNotATask(ctr)
	if opts.Live {
		r.checkLive(ctx, src, dst, ctr, dstUp)
	}
	if !dstUp {
		return r, nil
	}
	_, err = pluginEnabled(ctx, dst, srcRef)
	r.add("cargo plugin on target", err, "")
	r.add("same OS and architecture", samePlatform(ctx, src, dst), "")
	_, err = dst.API.ContainerInspect(ctx, r.Container, client.ContainerInspectOptions{})
	switch {
	case err == nil:
		r.add("name free on target", fmt.Errorf("%s already has a container named %q: remove or rename it first", dst.Context, r.Container), "")
	case cerrdefs.IsNotFound(err):
		r.add("name free on target", nil, "")
	default:
		r.add("name free on target", fmt.Errorf("asking %s: %w", dst.Context, err), "")
	}
	r.checkImage(ctx, src, dst, ctr)
	r.checkVolumeNames(ctx, dst, owned)
	r.checkPorts(ctx, dst, ctr)
	r.checkDisk(ctx, src, dst, ctr)
	if opts.Force {
		for i, c := range r.Checks {
			if !c.OK && skippable[c.Name] {
				r.Checks[i].OK, r.Checks[i].Skipped = true, true
				r.Checks[i].Detail = "skipped with --force: " + c.Detail
			}
		}
	}
	return r, nil
}

// checkVolumeNames refuses volumes whose names the target already uses:
// the move makes each under its own name there.
func (r *Report) checkVolumeNames(ctx context.Context, dst Engine, owned []string) {
	var taken []string
	n := 0
	for _, p := range r.Mounts {
		if p.Action != ActionFederate {
			continue
		}
		n++
		_, err := dst.API.VolumeInspect(ctx, p.Name, client.VolumeInspectOptions{})
		switch {
		case err == nil && slices.Contains(owned, p.Name):
		case err == nil:
			taken = append(taken, p.Name)
		case !cerrdefs.IsNotFound(err):
			r.add("volume names free on target", fmt.Errorf("asking %s about volume %s: %w", dst.Context, p.Name, err), "")
			return
		}
	}
	if n == 0 {
		return
	}
	var err error
	if len(taken) > 0 {
		err = fmt.Errorf("%s already has volume(s) %s (left from an earlier move? after `docker migrate failover --remove-source` on the host the container moved to, they are gone): remove them there first with `docker --context %s volume rm %s`",
			dst.Context, strings.Join(taken, ", "), dst.Context, strings.Join(taken, " "))
	}
	r.add("volume names free on target", err, fmt.Sprintf("%d volume(s)", n))
}

// checkDisk compares the target's free space with what the move writes
// there at once: the writable layer and, when copied, the image. The
// volumes' copies are checked by the target's plugin when they start.
func (r *Report) checkDisk(ctx context.Context, src, dst Engine, ctr container.InspectResponse) {
	const name = "enough disk on target"
	v, err := dst.API.VolumeInspect(ctx, volstatus.HostInfo, client.VolumeInspectOptions{})
	if err != nil {
		// An older plugin does not tell; the move finds out.
		return
	}
	free := float64(volstatus.ParseHost(v.Volume.Status).FreeBytes)
	if free <= 0 {
		// Not said: the plugin could not tell.
		return
	}
	var need int64
	what := "writable layer"
	if insp, err := src.API.ContainerInspect(ctx, r.Container, client.ContainerInspectOptions{Size: true}); err == nil && insp.Container.SizeRw != nil {
		need = *insp.Container.SizeRw
	}
	if r.ImageCopy {
		if img, err := src.API.ImageInspect(ctx, ctr.Image); err == nil {
			need += img.Size
			what += " and image"
		}
	}
	var derr error
	if float64(need) > free {
		derr = fmt.Errorf("%s has %s free but the %s need %s: free some space on %s (`docker --context %s system prune`)",
			dst.Context, units.BytesSize(free), what, units.BytesSize(float64(need)), dst.Context, dst.Context)
	}
	r.add(name, derr, fmt.Sprintf("%s free, %s needed now (%s)", units.BytesSize(free), units.BytesSize(float64(need)), what))
}

func reach(ctx context.Context, s Engine) error {
	if _, err := s.API.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("cannot reach the engine of docker context %q (check it with `docker --context %s version`): %w", s.Context, s.Context, err)
	}
	return nil
}

func notFound(err error, msg string) error {
	if err == nil {
		return nil
	}
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%s", msg)
	}
	return err
}

// pluginEnabled checks the cargo plugin on s. ref, the reference the
// other side's plugin was installed from, makes the install command in
// the message one to copy; it returns s's own.
func pluginEnabled(ctx context.Context, s Engine, ref string) (string, error) {
	l, err := s.API.PluginList(ctx, client.PluginListOptions{})
	if err != nil {
		return "", fmt.Errorf("listing plugins on %s: %w", s.Context, err)
	}
	for _, p := range l.Items {
		if repo, _, _ := strings.Cut(p.Name, ":"); repo == PluginName {
			if !p.Enabled {
				return p.PluginReference, fmt.Errorf("the cargo plugin is installed on %s but disabled: run `docker --context %s plugin enable %s`", s.Context, s.Context, p.Name)
			}
			return p.PluginReference, nil
		}
	}
	// A plugin made with `docker plugin create` has a reference nobody
	// can pull.
	if ref == "" || !strings.Contains(ref, "/") || strings.HasPrefix(ref, "docker.io/library/") {
		ref = "REGISTRY/cargo:latest"
	}
	return "", fmt.Errorf("the cargo plugin is not installed on %s: run `docker --context %s plugin install --grant-all-permissions --alias cargo %s`", s.Context, s.Context, ref)
}

func samePlatform(ctx context.Context, src, dst Engine) error {
	a, err := src.API.Info(ctx, client.InfoOptions{})
	if err != nil {
		return err
	}
	b, err := dst.API.Info(ctx, client.InfoOptions{})
	if err != nil {
		return err
	}
	if a.Info.OSType != b.Info.OSType || a.Info.Architecture != b.Info.Architecture {
		return fmt.Errorf("%s is %s/%s but %s is %s/%s", src.Context, a.Info.OSType, a.Info.Architecture, dst.Context, b.Info.OSType, b.Info.Architecture)
	}
	return nil
}

func (r *Report) checkMounts(ctr container.InspectResponse, opts CheckOptions) {
	mounts := ctr.Mounts
	// --tmpfs mounts are not among Mounts (--mount type=tmpfs ones are).
	if ctr.HostConfig != nil {
		for dst := range ctr.HostConfig.Tmpfs {
			mounts = append(mounts, container.MountPoint{Type: mount.TypeTmpfs, Destination: dst})
		}
	}
	var problems []string
	for _, m := range mounts {
		p := MountPlan{Type: string(m.Type), Name: m.Name, Driver: m.Driver, Destination: m.Destination}
		if m.Type == mount.TypeBind {
			p.Source = m.Source
		}
		switch {
		case m.Type == mount.TypeVolume && (isCargo(m.Driver) || m.Driver == localDriver):
			p.Action = ActionFederate
			p.Anonymous = anonymous(m.Name)
		case m.Type == mount.TypeTmpfs:
			p.Action = ActionRecreate
		case m.Type == mount.TypeBind && opts.SkipBindMounts:
			p.Action = ActionSkip
		case m.Type == mount.TypeBind:
			problems = append(problems, fmt.Sprintf("bind mount %s:%s cannot move with the container (use --skip-bind-mounts to start without it)", m.Source, m.Destination))
			continue
		case m.Type == mount.TypeVolume:
			problems = append(problems, fmt.Sprintf("volume %q at %s uses the %q driver; only cargo and local volumes can move", m.Name, m.Destination, m.Driver))
			continue
		default:
			problems = append(problems, fmt.Sprintf("%s mount at %s cannot move", m.Type, m.Destination))
			continue
		}
		r.Mounts = append(r.Mounts, p)
	}
	var err error
	if len(problems) > 0 {
		err = fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	r.add("every mount can move", err, fmt.Sprintf("%d mount(s)", len(mounts)))
}

// anonymous reports whether a volume name is one the engine generated.
func anonymous(name string) bool {
	if len(name) != 64 {
		return false
	}
	for _, c := range name {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// checkShared refuses local volumes another running container uses: the
// plugin cannot freeze them, so their copy would not be consistent.
func (r *Report) checkShared(ctx context.Context, src Engine, ctr container.InspectResponse) {
	var problems []string
	n := 0
	for _, p := range r.Mounts {
		if p.Action != ActionFederate || p.Driver != localDriver {
			continue
		}
		n++
		l, err := src.API.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("volume", p.Name)})
		if err != nil {
			problems = append(problems, fmt.Sprintf("listing the users of volume %s: %v", p.Name, err))
			continue
		}
		for _, c := range l.Items {
			if c.ID != ctr.ID {
				problems = append(problems, fmt.Sprintf("local volume %s is also used by running container %s: stop it first, as a local volume cannot be frozen while it is copied", p.Name, strings.TrimPrefix(firstName(c.Names), "/")))
			}
		}
	}
	if n == 0 {
		return
	}
	var err error
	if len(problems) > 0 {
		err = fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	r.add("local volumes not shared", err, fmt.Sprintf("%d local volume(s)", n))
}

// checkTies refuses a container bound to other containers, which stay
// behind: the target engine could not create it.
func (r *Report) checkTies(ctr container.InspectResponse) {
	hc := ctr.HostConfig
	if hc == nil {
		return
	}
	var ties []string
	for _, v := range hc.VolumesFrom {
		ties = append(ties, "--volumes-from "+v)
	}
	for _, l := range hc.Links {
		ties = append(ties, "--link "+l)
	}
	if c, ok := strings.CutPrefix(string(hc.PidMode), "container:"); ok {
		ties = append(ties, "--pid container:"+c)
	}
	if c, ok := strings.CutPrefix(string(hc.IpcMode), "container:"); ok {
		ties = append(ties, "--ipc container:"+c)
	}
	if len(ties) == 0 {
		return
	}
	r.add("no ties to other containers", fmt.Errorf("it uses other containers, which do not move with it (%s): recreate it without them, or move the data into its own volumes", strings.Join(ties, ", ")), "")
}

// checkNotATask refuses a container Swarm runs as a service's task:
// Swarm would start a replacement wherever it schedules the service, and
// the moved copy would run beside it. It says so only when it fails.
func (r *Report) checkNotATask(ctr container.InspectResponse) {
	if ctr.Config == nil || ctr.Config.Labels["com.docker.swarm.task.id"] == "" {
		return
	}
	service := cmpOr(ctr.Config.Labels["com.docker.swarm.service.name"], "its service")
	r.add("not a Swarm task", fmt.Errorf("it is a task of Swarm service %s, which Swarm reschedules itself: move the service with a placement constraint and its volume by hand (docs/fleet.md), not with docker migrate", service), "")
}

// isCargo reports whether a volume driver name is the cargo plugin's.
func isCargo(driver string) bool {
	repo, _, _ := strings.Cut(driver, ":")
	return repo == PluginName
}

func (r *Report) checkImage(ctx context.Context, src, dst Engine, ctr container.InspectResponse) {
	if _, err := dst.API.ImageInspect(ctx, ctr.Image); err == nil {
		r.add("image on target", nil, "present")
		return
	} else if !cerrdefs.IsNotFound(err) {
		r.add("image on target", fmt.Errorf("asking %s: %w", dst.Context, err), "")
		return
	}
	if _, err := src.API.ImageInspect(ctx, ctr.Image); err != nil {
		r.add("image on target", fmt.Errorf("%s lacks image %s and %s cannot provide it: %w", dst.Context, ctr.Config.Image, src.Context, err), "")
		return
	}
	r.ImageCopy = true
	r.add("image on target", nil, "will be copied from "+src.Context)
}
