package migrate

// The checks of a live move (`--live`): what must hold for the target to
// restore the container's processes from a CRIU checkpoint of them, found
// before anything stops.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// Names of the live checks; the skippable ones (--force) only risk a
// failed checkpoint or restore, which the move rolls back.
const (
	checkLiveRunning    = "container running"
	checkLiveSource     = "checkpoints on source"
	checkLiveTarget     = "checkpoints on target"
	checkLivePlatform   = "same kernel features"
	checkLiveCPU        = "CPU features on target"
	checkLiveMemory     = "memory on target"
	checkLiveCarry      = "nothing CRIU cannot carry"
	checkLiveConnection = "no established TCP connections"
)

func init() {
	skippable[checkLiveMemory] = true
	skippable[checkLiveConnection] = true
}

// checkLive adds the live checks to r. dst may be unreachable (dstUp).
func (r *Report) checkLive(ctx context.Context, src, dst Engine, ctr container.InspectResponse, dstUp bool) {
	running := ctr.State != nil && ctr.State.Running
	var err error
	if !running {
		err = fmt.Errorf("%s is not running: a live move carries running processes; move it without --live", r.Container)
	}
	r.add(checkLiveRunning, err, "")
	r.add(checkLiveCarry, carryable(ctr), "")
	srcInfo, serr := src.API.Info(ctx, client.InfoOptions{})
	r.addProbe(checkLiveSource, canCheckpoint(ctx, src, serr, srcInfo.Info, ctr.Image, true), criuDetail(srcInfo.Info))
	if running {
		n, err := establishedTCP(ctx, src.API, ctr.ID)
		switch {
		case err != nil:
			r.add(checkLiveConnection, nil, "cannot tell: "+err.Error())
		case n > 0:
			r.add(checkLiveConnection, fmt.Errorf("%s has %d established TCP connection(s), which CRIU does not carry unless the hosts enable it (tcp-established in /etc/criu/runc.conf on both): close them, or move with --force if the hosts enable it", r.Container, n), "")
		default:
			r.add(checkLiveConnection, nil, "")
		}
	}
	if !dstUp {
		return
	}
	dstInfo, derr := dst.API.Info(ctx, client.InfoOptions{})
	_, imgErr := dst.API.ImageInspect(ctx, ctr.Image)
	detail := criuDetail(dstInfo.Info)
	r.probeLater = imgErr != nil
	if imgErr != nil {
		detail += "; probed at the checkpoint phase, once the image is there"
	}
	r.addProbe(checkLiveTarget, canCheckpoint(ctx, dst, derr, dstInfo.Info, ctr.Image, imgErr == nil), detail)
	if serr == nil && derr == nil {
		r.add(checkLivePlatform, samePlatformForRestore(src.Context, dst.Context, srcInfo.Info, dstInfo.Info, ctr), "kernel "+dstInfo.Info.KernelVersion)
	}
	srcHost, dstHost := hostFacts(ctx, src), hostFacts(ctx, dst)
	if missing := missingFlags(srcHost.CPUFlags, dstHost.CPUFlags); srcHost.CPUFlags == "" || dstHost.CPUFlags == "" {
		r.add(checkLiveCPU, nil, "cannot tell: a plugin does not report its CPU")
	} else if len(missing) > 0 {
		r.add(checkLiveCPU, fmt.Errorf("%s's CPU lacks features the processes may use on %s (%s): restored there they could crash; move it without --live", dst.Context, src.Context, strings.Join(missing[:min(len(missing), 8)], " ")), "")
	} else if err := sameXSave(src.Context, dst.Context, srcHost, dstHost); err != nil {
		r.add(checkLiveCPU, err, "")
	} else {
		r.add(checkLiveCPU, nil, "every feature of "+src.Context+"'s CPU"+xsaveDetail(dstHost))
	}
	used, err := memoryUsed(ctx, src.API, ctr.ID)
	switch {
	case err != nil || dstHost.MemAvailableBytes == 0 || !running:
		r.add(checkLiveMemory, nil, "cannot tell")
	case used > dstHost.MemAvailableBytes:
		r.add(checkLiveMemory, fmt.Errorf("%s uses %s of memory but %s has %s available: free memory there first", r.Container,
			units.BytesSize(float64(used)), dst.Context, units.BytesSize(float64(dstHost.MemAvailableBytes))), "")
	default:
		r.add(checkLiveMemory, nil, fmt.Sprintf("%s used, %s available", units.BytesSize(float64(used)), units.BytesSize(float64(dstHost.MemAvailableBytes))))
	}
}

// addProbe adds a checkpoint check; a probe the image cannot run passes:
// the checkpoint itself then tells, and a failed one changes nothing.
func (r *Report) addProbe(name string, err error, detail string) {
	if errors.Is(err, errNoProbe) {
		err, detail = nil, detail+"; not probed: "+errNoProbe.Error()
	}
	r.add(name, err, detail)
}

// criuDetail says an engine's versions that matter to a checkpoint.
func criuDetail(info system.Info) string {
	return fmt.Sprintf("engine %s, runtime %s, cgroup v%s", info.ServerVersion, info.DefaultRuntime, cmpOr(info.CgroupVersion, "1"))
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// canCheckpoint tells whether engine e can checkpoint: experimental
// features on, and a probe container of image checkpointed there (when
// probe is set: the image is on e).
func canCheckpoint(ctx context.Context, e Engine, infoErr error, info system.Info, image string, probe bool) error {
	if infoErr != nil {
		return infoErr
	}
	if !info.ExperimentalBuild {
		return fmt.Errorf("the engine of %s has experimental features off, and checkpoints need them: add \"experimental\": true to its daemon.json and restart it", e.Context)
	}
	if !probe {
		return nil // tried again at the checkpoint phase, once the image is there
	}
	return probeCheckpoint(ctx, e, image)
}

// errNoProbe: the image cannot run the probe; the checkpoint itself tells.
var errNoProbe = errors.New("the image has no sh to run a probe")

// probeCheckpoint checkpoints a throwaway container of image on e: the
// only way to learn that CRIU is there and works, as runc finds it.
func probeCheckpoint(ctx context.Context, e Engine, image string) error {
	resp, err := e.API.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: image, Entrypoint: []string{"sh", "-c", "sleep 120"}, Cmd: nil,
			Labels: map[string]string{"com.docker.migrate.probe": "checkpoint"}},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
	})
	if err != nil {
		return fmt.Errorf("creating a probe container on %s: %w", e.Context, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = e.API.ContainerRemove(rctx, resp.ID, client.ContainerRemoveOptions{Force: true})
	}()
	if _, err := e.API.ContainerStart(ctx, resp.ID, client.ContainerStartOptions{}); err != nil {
		return errNoProbe
	}
	if _, err := e.API.CheckpointCreate(ctx, resp.ID, client.CheckpointCreateOptions{CheckpointID: "probe", Exit: true}); err != nil {
		return fmt.Errorf("the engine of %s cannot checkpoint a container (is CRIU 4.2 or later installed where runc finds it, on dockerd's PATH?): %w", e.Context, err)
	}
	return nil
}

// carryable refuses what a checkpoint cannot carry to another host.
func carryable(ctr container.InspectResponse) error {
	hc := ctr.HostConfig
	if hc == nil {
		return nil
	}
	var why []string
	if hc.Privileged {
		why = append(why, "--privileged")
	}
	if len(hc.Devices) > 0 {
		why = append(why, "devices (--device)")
	}
	for _, m := range ctr.Mounts {
		if m.Type == mount.TypeBind {
			why = append(why, "bind mount "+m.Destination+" (its open files cannot be restored without it)")
		}
	}
	for what, mode := range map[string]string{"--network": string(hc.NetworkMode), "--pid": string(hc.PidMode), "--ipc": string(hc.IpcMode), "--uts": string(hc.UTSMode), "--userns": string(hc.UsernsMode)} {
		// The host's network is restored as it is: runc treats it as
		// an external namespace and joins the target's.
		if mode == "host" && what != "--network" || strings.HasPrefix(mode, "container:") || what == "--ipc" && mode == "shareable" {
			why = append(why, what+" "+mode+" (a namespace shared with the host or another container)")
		}
	}
	if ctr.Config != nil && ctr.Config.Tty {
		why = append(why, "a terminal (-t)")
	}
	if len(why) == 0 {
		return nil
	}
	slices.Sort(why)
	return fmt.Errorf("a checkpoint cannot carry %s: move it without --live", strings.Join(why, ", "))
}

// samePlatformForRestore refuses targets whose cgroups or runtime differ:
// runc restores into the same kind of cgroup with the same runtime.
func samePlatformForRestore(srcCtx, dstCtx string, a, b system.Info, ctr container.InspectResponse) error {
	if cmpOr(a.CgroupVersion, "1") != cmpOr(b.CgroupVersion, "1") {
		return fmt.Errorf("%s runs cgroup v%s but %s cgroup v%s", srcCtx, cmpOr(a.CgroupVersion, "1"), dstCtx, cmpOr(b.CgroupVersion, "1"))
	}
	runtime := a.DefaultRuntime
	if ctr.HostConfig != nil && ctr.HostConfig.Runtime != "" {
		runtime = ctr.HostConfig.Runtime
	}
	if _, ok := b.Runtimes[runtime]; !ok && b.Runtimes != nil {
		return fmt.Errorf("%s has no runtime %q", dstCtx, runtime)
	}
	if nm := ctr.HostConfig; nm != nil && nm.NetworkMode != "host" && engineMajor(b.ServerVersion) >= 28 {
		return fmt.Errorf("%s runs Engine %s, which cannot restore a container with a network namespace of its own (it joins the network through the process before a restored one has any: containerd/containerd#12141); move it without --live, or live to an engine before 28", dstCtx, b.ServerVersion)
	}
	return nil
}

// engineMajor is the major version of an engine version string; 0 when
// it cannot tell.
func engineMajor(v string) int {
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// hostFacts reads the cargo.host facts of e; zero when unknown.
func hostFacts(ctx context.Context, e Engine) volstatus.Host {
	v, err := e.API.VolumeInspect(ctx, volstatus.HostInfo, client.VolumeInspectOptions{})
	if err != nil {
		return volstatus.Host{}
	}
	return volstatus.ParseHost(v.Volume.Status)
}

// sameXSave refuses a target whose CPU saves its extended state (FPU and
// vector registers) differently: CRIU restores the registers from a save
// area of the source's layout, as its own "fpu" check demands (every
// component the source saves, save areas of the same size). A plugin
// that does not report it cannot be compared.
func sameXSave(srcCtx, dstCtx string, a, b volstatus.Host) error {
	if a.XSaveFeatures == "" || b.XSaveFeatures == "" {
		return nil
	}
	am, aerr := strconv.ParseUint(a.XSaveFeatures, 0, 64)
	bm, berr := strconv.ParseUint(b.XSaveFeatures, 0, 64)
	switch {
	case aerr != nil || berr != nil:
		return nil
	case am&^bm != 0:
		return fmt.Errorf("%s's CPU cannot hold register state the processes may have on %s (XSAVE components %#x missing): restored there they could crash; move it without --live", dstCtx, srcCtx, am&^bm)
	case a.XSaveSize != b.XSaveSize || a.XSaveMaxSize != b.XSaveMaxSize:
		return fmt.Errorf("%s's CPU saves registers in %d bytes (%d at most) but %s's in %d (%d): CRIU restores only between equal layouts; move it without --live", dstCtx, b.XSaveSize, b.XSaveMaxSize, srcCtx, a.XSaveSize, a.XSaveMaxSize)
	}
	return nil
}

func xsaveDetail(h volstatus.Host) string {
	if h.XSaveFeatures == "" {
		return ""
	}
	return fmt.Sprintf(", the same register state (XSAVE %s, %d bytes)", h.XSaveFeatures, h.XSaveSize)
}

// missingFlags lists the flags of have that want lacks.
func missingFlags(have, want string) []string {
	w := strings.Fields(want)
	var out []string
	for _, f := range strings.Fields(have) {
		if !slices.Contains(w, f) {
			out = append(out, f)
		}
	}
	return out
}

// memoryUsed is the container's memory use, as the engine's stats say.
func memoryUsed(ctx context.Context, api client.APIClient, id string) (int64, error) {
	res, err := api.ContainerStats(ctx, id, client.ContainerStatsOptions{})
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return 0, err
	}
	used := int64(st.MemoryStats.Usage)
	// Page cache can be dropped; it needs no room on the target.
	for _, k := range []string{"inactive_file", "total_inactive_file"} {
		if v, ok := st.MemoryStats.Stats[k]; ok && int64(v) < used {
			used -= int64(v)
			break
		}
	}
	return used, nil
}

// establishedTCP counts the container's established TCP connections, as
// its own /proc/net/tcp and tcp6 show them (state 01).
func establishedTCP(ctx context.Context, api client.APIClient, id string) (int, error) {
	ex, err := api.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: []string{"cat", "/proc/net/tcp", "/proc/net/tcp6"}, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, err
	}
	att, err := api.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, err
	}
	defer att.Close()
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, io.LimitReader(att.Reader, 16<<20)); err != nil {
		return 0, err
	}
	if out.Len() == 0 {
		return 0, fmt.Errorf("reading /proc/net/tcp in the container: %s", strings.TrimSpace(errOut.String()))
	}
	return countEstablished(&out), nil
}

// countEstablished counts the lines of /proc/net/tcp text in state 01.
func countEstablished(r io.Reader) int {
	n := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 3 && f[0] != "sl" && f[3] == "01" {
			n++
		}
	}
	return n
}
