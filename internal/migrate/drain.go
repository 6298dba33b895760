package migrate

// Draining a host: every container of one context moved to one of
// several targets, a few at a time. The plan (which container goes
// where, and whether its checks pass there) is made first and changes
// nothing; the moves are the ordinary move of each container.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

// DefaultDrainParallel is how many moves a drain runs at once unless
// told otherwise: enough to overlap one move's waits with another's
// copy, few enough not to swamp the source's disk and network.
const DefaultDrainParallel = 2

// DrainOptions say what to drain, where to and how.
type DrainOptions struct {
	// Source is the docker context to empty; To the contexts its
	// containers may go to.
	Source string
	To     []string
	// Parallel bounds the moves at once; DefaultDrainParallel when
	// zero or less. Containers kept together move one after the other
	// and count as one.
	Parallel int
	// Live moves the running containers' processes too; a stopped one
	// moves as it is, there being nothing to carry.
	Live           bool
	SkipBindMounts bool
	Force          bool
	// Progress, when not nil, gives each move its own progress.
	Progress func(container string) Progress
}

// DrainTarget is one target of a drain and its room, as its cargo plugin
// reports it; 0 when unknown.
type DrainTarget struct {
	Context           string `json:"context"`
	FreeBytes         int64  `json:"free_bytes"`
	MemAvailableBytes int64  `json:"mem_available_bytes"`
	// Error says why the target cannot take any container.
	Error string `json:"error,omitempty"`
}

// PlannedMove is one container of a drain's plan.
type PlannedMove struct {
	Container string `json:"container"`
	// State is the container's on the source: running, exited, ...
	State string `json:"state"`
	// Target is where it goes; empty when it can go nowhere.
	Target string `json:"target,omitempty"`
	// Group numbers the containers kept together (from 1); With names
	// the others of its group and Shares what they share.
	Group  int      `json:"group"`
	With   []string `json:"with,omitempty"`
	Shares []string `json:"shares,omitempty"`
	// Live is set when it moves with its processes.
	Live bool `json:"live"`
	// MemoryBytes and DiskBytes are what it needs on the target at
	// once: its memory if running, its writable layer.
	MemoryBytes int64 `json:"memory_bytes"`
	DiskBytes   int64 `json:"disk_bytes"`
	// OK is set when its checks pass on Target; Error says otherwise
	// what stands in the way, on each target tried.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// DrainPlan is what a drain will do; Plan makes it, changing nothing.
type DrainPlan struct {
	Source  string        `json:"source"`
	Targets []DrainTarget `json:"targets"`
	Moves   []PlannedMove `json:"moves"`
	// MovedOut names the source's containers left from earlier moves
	// (stopped, their volumes exported): they are not moved again.
	MovedOut []string `json:"moved_out,omitempty"`
}

// Failed lists the planned moves whose checks failed.
func (p *DrainPlan) Failed() []PlannedMove {
	var out []PlannedMove
	for _, m := range p.Moves {
		if !m.OK {
			out = append(out, m)
		}
	}
	return out
}

// What became of a container in a drain.
const (
	DrainMoved = "moved"
	// DrainFailed: its checks failed or its move failed (and was rolled
	// back, as a single move is).
	DrainFailed = "failed"
	// DrainNotStarted: the drain was interrupted first, or another
	// container of its group failed.
	DrainNotStarted = "not started"
)

// DrainResult is what became of one container of a drain.
type DrainResult struct {
	Container string `json:"container"`
	Target    string `json:"target,omitempty"`
	Result    string `json:"result"`
	// Downtime is the move's, for a container that was running.
	Downtime time.Duration `json:"downtime_ns"`
	Running  bool          `json:"running"`
	Live     bool          `json:"live,omitempty"`
	Error    string        `json:"error,omitempty"`
	Warnings []string      `json:"warnings,omitempty"`
}

// drainUnit is one container as the planning sees it.
type drainUnit struct {
	Name    string
	State   string
	Running bool
	// Networks are its user-defined networks, Volumes its named volumes:
	// containers sharing any of them are kept together.
	Networks []string
	Volumes  []string
	Memory   int64
	Disk     int64
	// Err, when set, keeps it (and its group) from moving.
	Err string
}

// drainGroup is containers that move to the same target, one after the
// other.
type drainGroup struct {
	Members []drainUnit
	// Shares lists what ties them: "network NAME", "volume NAME".
	Shares []string
	// SharedVolumes are the volumes more than one member mounts.
	SharedVolumes []string
	Memory, Disk  int64
}

func (g drainGroup) names() []string {
	out := make([]string, len(g.Members))
	for i, m := range g.Members {
		out[i] = m.Name
	}
	return out
}

// groupUnits puts containers that share a user-defined network or a
// named volume in one group, transitively. Groups come in the order of
// their first member's name, members by name.
func groupUnits(units []drainUnit) []drainGroup {
	units = slices.Clone(units)
	slices.SortFunc(units, func(a, b drainUnit) int { return cmp.Compare(a.Name, b.Name) })
	parent := make([]int, len(units))
	for i := range parent {
		parent[i] = i
	}
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	union := func(a, b int) {
		ra, rb := find(a), find(b)
		if ra == rb {
			return
		}
		// The smaller index roots, so that a group's order is its
		// first member's.
		if rb < ra {
			ra, rb = rb, ra
		}
		parent[rb] = ra
	}
	// Who holds each shared thing, by key "network NAME" / "volume NAME".
	holders := map[string][]int{}
	for i, u := range units {
		for _, n := range u.Networks {
			holders["network "+n] = append(holders["network "+n], i)
		}
		for _, v := range u.Volumes {
			holders["volume "+v] = append(holders["volume "+v], i)
		}
	}
	keys := make([]string, 0, len(holders))
	for k, hs := range holders {
		if len(hs) > 1 {
			keys = append(keys, k)
			for _, h := range hs[1:] {
				union(hs[0], h)
			}
		}
	}
	slices.Sort(keys)
	byRoot := map[int]int{}
	var groups []drainGroup
	for i, u := range units {
		r := find(i)
		gi, ok := byRoot[r]
		if !ok {
			gi = len(groups)
			byRoot[r] = gi
			groups = append(groups, drainGroup{})
		}
		g := &groups[gi]
		g.Members = append(g.Members, u)
		g.Memory += u.Memory
		g.Disk += u.Disk
	}
	for _, k := range keys {
		g := &groups[byRoot[find(holders[k][0])]]
		g.Shares = append(g.Shares, k)
		if v, ok := strings.CutPrefix(k, "volume "); ok {
			g.SharedVolumes = append(g.SharedVolumes, v)
		}
	}
	return groups
}

// targetRoom is a target's room left as the plan fills it; 0 is unknown.
type targetRoom struct {
	Context string
	Memory  int64
	Disk    int64
	placed  int
}

// placement is where a group goes, or why it goes nowhere.
type placement struct {
	Target string
	Err    error
}

// placeGroups chooses each group's target: the biggest groups first,
// each to the target with the most memory left after it, then the most
// disk, then the fewest groups, among those it fits in and whose checks
// pass (check, for a group on a target; the next target is tried when
// they fail). groups[i] gets placements[i].
func placeGroups(groups []drainGroup, rooms []targetRoom, check func(g drainGroup, target string) error) []placement {
	rooms = slices.Clone(rooms)
	order := make([]int, len(groups))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(groups[b].Memory, groups[a].Memory), cmp.Compare(groups[b].Disk, groups[a].Disk))
	})
	out := make([]placement, len(groups))
	for _, gi := range order {
		g := groups[gi]
		var fit []int
		var why []string
		for ti, r := range rooms {
			if err := r.fits(g); err != nil {
				why = append(why, err.Error())
				continue
			}
			fit = append(fit, ti)
		}
		slices.SortStableFunc(fit, func(a, b int) int { return rooms[a].compareAfter(rooms[b], g) })
		out[gi].Err = errors.New(strings.Join(why, "; "))
		if len(rooms) == 0 {
			out[gi].Err = errors.New("no target can take containers")
		}
		for _, ti := range fit {
			if err := check(g, rooms[ti].Context); err != nil {
				why = append(why, fmt.Sprintf("on %s: %v", rooms[ti].Context, err))
				out[gi].Err = errors.New(strings.Join(why, "; "))
				continue
			}
			out[gi] = placement{Target: rooms[ti].Context}
			rooms[ti].take(g)
			break
		}
	}
	return out
}

// fits says why g does not fit in what r has left, if it does not.
func (r targetRoom) fits(g drainGroup) error {
	var short []string
	if r.Memory > 0 && g.Memory > r.Memory {
		short = append(short, fmt.Sprintf("%s of memory but it has %s available", units.BytesSize(float64(g.Memory)), units.BytesSize(float64(r.Memory))))
	}
	if r.Disk > 0 && g.Disk > r.Disk {
		short = append(short, fmt.Sprintf("%s of disk but it has %s free", units.BytesSize(float64(g.Disk)), units.BytesSize(float64(r.Disk))))
	}
	if len(short) == 0 {
		return nil
	}
	return fmt.Errorf("on %s: too little room: needs %s", r.Context, strings.Join(short, " and "))
}

// compareAfter orders two targets for g: the one with more memory left
// once g is there first, then more disk, then fewer groups. A room not
// known on either side does not decide.
func (r targetRoom) compareAfter(o targetRoom, g drainGroup) int {
	if r.Memory > 0 && o.Memory > 0 {
		if c := cmp.Compare(o.Memory-g.Memory, r.Memory-g.Memory); c != 0 {
			return c
		}
	}
	if r.Disk > 0 && o.Disk > 0 {
		if c := cmp.Compare(o.Disk-g.Disk, r.Disk-g.Disk); c != 0 {
			return c
		}
	}
	return cmp.Compare(r.placed, o.placed)
}

func (r *targetRoom) take(g drainGroup) {
	if r.Memory > 0 {
		r.Memory = max(r.Memory-g.Memory, 1)
	}
	if r.Disk > 0 {
		r.Disk = max(r.Disk-g.Disk, 1)
	}
	r.placed++
}

// drainTargets validates a drain's contexts: a source, at least one
// target, none of them the source, each once.
func drainTargets(opts DrainOptions) ([]string, error) {
	if opts.Source == "" {
		return nil, errors.New("no context to drain: docker migrate drain SOURCE_CONTEXT --to TARGET[,TARGET...]")
	}
	var to []string
	for _, t := range opts.To {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
		case t == opts.Source:
			return nil, fmt.Errorf("--to %s is the context being drained: name other contexts (see `docker context ls`)", t)
		case !slices.Contains(to, t):
			to = append(to, t)
		}
	}
	if len(to) == 0 {
		return nil, fmt.Errorf(`required flag "to" not set: docker migrate drain %s --to TARGET[,TARGET...]`, opts.Source)
	}
	return to, nil
}

// planDrain makes the plan of draining src to dsts: every container of
// src, grouped, placed and checked on its target. It changes nothing.
// A target whose engine is nil could not be reached.
func planDrain(ctx context.Context, src Engine, dsts []Engine, opts DrainOptions) (*DrainPlan, error) {
	if err := reach(ctx, src); err != nil {
		return nil, err
	}
	plan := &DrainPlan{Source: src.Context, Moves: []PlannedMove{}}
	var rooms []targetRoom
	byName := map[string]Engine{}
	for _, d := range dsts {
		t := DrainTarget{Context: d.Context}
		if err := reach(ctx, d); err != nil {
			t.Error = err.Error()
		} else {
			h := hostFacts(ctx, d)
			t.FreeBytes, t.MemAvailableBytes = h.FreeBytes, h.MemAvailableBytes
			rooms = append(rooms, targetRoom{Context: d.Context, Memory: h.MemAvailableBytes, Disk: h.FreeBytes})
			byName[d.Context] = d
		}
		plan.Targets = append(plan.Targets, t)
	}
	rows, err := listHost(ctx, src)
	if err != nil {
		return nil, err
	}
	var names []string
	state := map[string]ContainerRow{}
	for _, r := range rows {
		if r.Migration == MigrationMovedOut {
			plan.MovedOut = append(plan.MovedOut, r.Container)
			continue
		}
		names = append(names, r.Container)
		state[r.Container] = r
	}
	units, err := drainUnits(ctx, src, names, state)
	if err != nil {
		return nil, err
	}
	groups := groupUnits(units)
	// A check of one container on one target, run once whichever group
	// placement asks.
	type key struct{ name, target string }
	reports := map[key]error{}
	check := func(g drainGroup, target string) error {
		var fails []string
		for _, u := range g.Members {
			k := key{u.Name, target}
			err, ok := reports[k]
			if !ok {
				err = checkOne(ctx, src, byName[target], u, opts)
				reports[k] = err
			}
			if err != nil {
				fails = append(fails, err.Error())
			}
		}
		if len(fails) > 0 {
			return errors.New(strings.Join(fails, "; "))
		}
		return nil
	}
	placed := placeGroups(groups, rooms, func(g drainGroup, target string) error {
		if err := groupErr(g); err != nil {
			return err
		}
		return check(g, target)
	})
	for gi, g := range groups {
		p := placed[gi]
		// A group that cannot move for itself says so once, not once
		// per target tried.
		if err := groupErr(g); err != nil {
			p.Err = err
		}
		for _, u := range g.Members {
			m := PlannedMove{Container: u.Name, State: u.State, Target: p.Target, Group: gi + 1, Shares: g.Shares,
				Live: opts.Live && u.Running, MemoryBytes: u.Memory, DiskBytes: u.Disk, OK: p.Err == nil}
			for _, n := range g.names() {
				if n != u.Name {
					m.With = append(m.With, n)
				}
			}
			if p.Err != nil {
				m.Error = p.Err.Error()
			}
			plan.Moves = append(plan.Moves, m)
		}
	}
	return plan, nil
}

// groupErr says why a group cannot move wherever it goes: a member that
// cannot move at all, or a volume two members share.
func groupErr(g drainGroup) error {
	var why []string
	for _, u := range g.Members {
		if u.Err != "" {
			why = append(why, u.Name+": "+u.Err)
		}
	}
	if len(g.SharedVolumes) > 0 {
		// A move exports a volume when its container stops and makes it
		// on the target: the second container's move would find the
		// volume there, and the export refuses a volume another running
		// container mounts.
		why = append(why, fmt.Sprintf("%s share volume(s) %s, and docker migrate moves one container at a time: the second would find the volume already on the target. Move one of them off the volume (or remove it) and drain again",
			strings.Join(g.names(), ", "), strings.Join(g.SharedVolumes, ", ")))
	}
	if len(why) == 0 {
		return nil
	}
	return errors.New(strings.Join(why, "; "))
}

// checkOne runs a container's checks on a target; the error lists the
// failed ones.
func checkOne(ctx context.Context, src, dst Engine, u drainUnit, opts DrainOptions) error {
	r, err := checkMove(ctx, src, dst, u.Name, CheckOptions{To: dst.Context, SkipBindMounts: opts.SkipBindMounts,
		Force: opts.Force, Live: opts.Live && u.Running}, nil)
	if err != nil {
		return fmt.Errorf("%s: checks could not run: %w", u.Name, err)
	}
	var fails []string
	for _, c := range r.Failed() {
		fails = append(fails, c.Name+": "+c.Detail)
	}
	if len(fails) > 0 {
		return fmt.Errorf("%s: %s", u.Name, strings.Join(fails, "; "))
	}
	return nil
}

// drainUnits reads what planning needs of each container: its networks,
// volumes, memory in use and writable layer, a few containers at once
// (a container's stats take a second or so).
func drainUnits(ctx context.Context, src Engine, names []string, rows map[string]ContainerRow) ([]drainUnit, error) {
	units := make([]drainUnit, len(names))
	var g errgroup.Group
	g.SetLimit(4)
	for i, name := range names {
		g.Go(func() error {
			row := rows[name]
			u := drainUnit{Name: name, State: row.State}
			if row.Migration == MigrationInterrupted {
				u.Err = "a move of it was interrupted (" + row.Next + ")"
			}
			insp, err := src.API.ContainerInspect(ctx, name, client.ContainerInspectOptions{Size: true})
			if err != nil {
				return fmt.Errorf("inspecting container %s on %s: %w", name, src.Context, err)
			}
			ctr := insp.Container
			u.Running = ctr.State != nil && ctr.State.Running
			u.Networks = userNetworks(ctr)
			for _, m := range ctr.Mounts {
				if m.Type == mount.TypeVolume && m.Name != "" {
					u.Volumes = append(u.Volumes, m.Name)
				}
			}
			if ctr.SizeRw != nil {
				u.Disk = *ctr.SizeRw
			}
			if u.Running {
				// Unknown use counts as none: the live check, if any,
				// asks again.
				u.Memory, _ = memoryUsed(ctx, src.API, ctr.ID)
			}
			units[i] = u
			return nil
		})
	}
	return units, g.Wait()
}

// runDrain makes the plan's moves, opts.Parallel groups at once, each
// group's members one after the other on its target. A failed move is
// rolled back as any move is, and the others go on; the moves that
// succeeded are not undone. Once ctx ends no move starts, and those
// running roll back. Results are in the plan's order.
func runDrain(ctx context.Context, src Engine, dsts map[string]Engine, plan *DrainPlan, opts DrainOptions) []DrainResult {
	res := make([]DrainResult, len(plan.Moves))
	var groups [][]int
	at := map[int]int{}
	for i, m := range plan.Moves {
		res[i] = DrainResult{Container: m.Container, Target: m.Target, Result: DrainFailed, Error: m.Error}
		if !m.OK {
			continue
		}
		gi, ok := at[m.Group]
		if !ok {
			gi = len(groups)
			at[m.Group] = gi
			groups = append(groups, nil)
		}
		groups[gi] = append(groups[gi], i)
	}
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = DefaultDrainParallel
	}
	var g errgroup.Group
	g.SetLimit(parallel)
	var mu sync.Mutex // res
	set := func(i int, r DrainResult) {
		mu.Lock()
		res[i] = r
		mu.Unlock()
	}
	interrupted := func(i int) {
		set(i, DrainResult{Container: plan.Moves[i].Container, Target: plan.Moves[i].Target, Result: DrainNotStarted,
			Error: "the drain was interrupted before this move started"})
	}
	for _, members := range groups {
		if ctx.Err() != nil {
			for _, i := range members {
				interrupted(i)
			}
			continue
		}
		g.Go(func() error {
			failed := ""
			for _, i := range members {
				pm := plan.Moves[i]
				switch {
				case ctx.Err() != nil:
					interrupted(i)
					continue
				case failed != "":
					set(i, DrainResult{Container: pm.Container, Target: pm.Target, Result: DrainNotStarted,
						Error: fmt.Sprintf("not moved, as %s of its group failed to move and it stays with it", failed)})
					continue
				}
				mo := MoveOptions{CheckOptions: CheckOptions{To: pm.Target, SkipBindMounts: opts.SkipBindMounts, Force: opts.Force, Live: pm.Live}}
				if opts.Progress != nil {
					mo.Progress = opts.Progress(pm.Container)
				}
				r, err := move(ctx, src, dsts[pm.Target], pm.Container, mo)
				if err != nil {
					failed = pm.Container
					set(i, DrainResult{Container: pm.Container, Target: pm.Target, Result: DrainFailed, Error: err.Error()})
					continue
				}
				set(i, DrainResult{Container: pm.Container, Target: pm.Target, Result: DrainMoved, Downtime: r.Downtime,
					Running: r.Running, Live: r.Live, Warnings: r.Warnings})
			}
			return nil
		})
	}
	_ = g.Wait() // every move's outcome is in res
	return res
}
