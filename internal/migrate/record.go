package migrate

// The move record: what a move has done so far, kept on the source host
// so that a killed CLI, a dropped ssh session or a rebooted machine leaves
// a move that can be finished (`docker migrate CONTAINER --to TARGET`
// again) or undone (`docker migrate rollback CONTAINER`).
//
// The record lives in the labels of an empty local volume on the source
// engine: the engine keeps volume labels durably (its volume store is a
// bolt database) and every engine version has them, so the record needs
// nothing from the cargo plugin or a shared file system. Labels cannot
// change, so each update is a new volume with the next sequence number;
// the older ones are removed after it, and the highest number wins.
// Writing the next number is a compare-and-set (write): the run whose
// volume it is holds the move, and its lease (lease.go) keeps other runs
// out while it lives.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Labels of a record volume.
const (
	// recordLabel holds the moved container's ID: a record is found by
	// filtering on it.
	recordLabel = "com.docker.migrate.move"
	// recordDataLabel holds the record, as JSON.
	recordDataLabel = "com.docker.migrate.record"
	// recordPrefix starts a record volume's name.
	recordPrefix = "cargo-move-"
)

// moveRecord is what a move has done, in the order it did it. Targets of
// the move's objects are written before they are made (exports, volumes)
// or at once after (the target container): a rollback removes whatever
// of them exists.
type moveRecord struct {
	Container   string `json:"container"`
	ContainerID string `json:"container_id"`
	Source      string `json:"source"`
	Target      string `json:"target"`
	// WasRunning and RestartPolicy are the source container's before the
	// move touched it: a rollback restores them.
	WasRunning    bool                    `json:"was_running"`
	RestartPolicy container.RestartPolicy `json:"restart_policy"`
	// Phase is the last phase done.
	Phase string `json:"phase"`
	// Starting is set before the target container is started: from then
	// on it may run there, and a rollback that cannot ask the target
	// must not start the source one.
	Starting bool     `json:"starting,omitempty"`
	Exports  []string `json:"exports,omitempty"`
	Volumes  []string `json:"volumes,omitempty"`
	Networks []string `json:"networks,omitempty"`
	TargetID string   `json:"target_id,omitempty"`
	// Checkpoint names the source container's checkpoint of a live move,
	// in its own checkpoints directory: a rollback restores from it.
	Checkpoint string    `json:"checkpoint,omitempty"`
	Started    time.Time `json:"started"`
	Updated    time.Time `json:"updated"`
	Seq        int       `json:"seq"`
	// Lease says which run drives the move; nil once released, and in
	// records of CLIs that had none.
	Lease *lease `json:"lease,omitempty"`

	// holder is this run's hold on the move, once a save under a
	// takeLease context made it ours.
	holder *holder
	// createdAt is when the source engine made the volume read, on its
	// clock: the lease's last renewal.
	createdAt time.Time
	// known is the sequence number of the version this run last read or
	// wrote, 0 if none: the next write requires it still to be there.
	known int
}

// phaseStart and phaseRestore are the last phases of a move and a live
// move: a record past them is of a move that finished.
const (
	phaseStart   = "start"
	phaseRestore = "restore"
)

// Done reports whether the move finished: the container runs (or was
// made, stopped as it was) on the target.
func (r *moveRecord) Done() bool { return r.Phase == phaseStart || r.Phase == phaseRestore }

// FinishCommand and RollbackCommand are what a user runs, against the
// source's context, to finish or undo an interrupted move.
func (r *moveRecord) FinishCommand() string {
	live := ""
	if r.Checkpoint != "" {
		live = " --live"
	}
	return fmt.Sprintf("docker --context %s migrate %s --to %s%s", r.Source, r.Container, r.Target, live)
}

func (r *moveRecord) RollbackCommand() string {
	return fmt.Sprintf("docker --context %s migrate rollback %s", r.Source, r.Container)
}

func (r *moveRecord) volumeName() string {
	id := r.ContainerID
	if len(id) > 12 {
		id = id[:12]
	}
	return recordPrefix + id + "-" + strconv.Itoa(r.Seq)
}

// save writes r as its next version, then removes the older ones. Once
// save returns, the record survives the CLI and a reboot of the source.
// Under a takeLease context the version carries the lease, and a save
// that finds the move taken by another run fails with a *busyError.
func (r *moveRecord) save(ctx context.Context, api client.APIClient) error {
	return r.commit(ctx, api, true)
}

// claim writes r as its next version under this run's lease, as save
// does, but keeps its Updated time, which says when the last phase was
// done: a rerun takes an interrupted move over with it.
func (r *moveRecord) claim(ctx context.Context, api client.APIClient) error {
	return r.commit(ctx, api, false)
}

func (r *moveRecord) commit(ctx context.Context, api client.APIClient, touch bool) error {
	if r.holder == nil {
		r.holder = holderOf(ctx)
	}
	h := r.holder
	r.Lease = nil
	if h != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.lost != nil {
			return h.lost
		}
		r.Lease = h.stamp()
	}
	r.Seq++
	if touch {
		r.Updated = time.Now().UTC()
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := r.write(ctx, api, data, r.known); err != nil {
		var b *busyError
		if errors.As(err, &b) {
			b.taken = h != nil && h.rec != nil
		}
		if h != nil && lostMove(err) {
			// Lost, at once or after holding the move: either way, this
			// run may not touch it or undo what it did.
			h.fail(err)
		}
		return err
	}
	r.known = r.Seq
	if h != nil {
		h.saved(r, api, data)
	}
	return nil
}

// write makes the volume of r's version r.Seq holding data, then removes
// the older versions. It fails with a *busyError, having changed
// nothing, when that version was made by another run already (the engine
// then returns the volume it has, with its labels) or a newer one exists,
// and with errRecordGone when version prev (unless 0) is no longer there:
// a rollback or a failover removed the record.
func (r *moveRecord) write(ctx context.Context, api client.APIClient, data []byte, prev int) error {
	name := r.volumeName()
	v, err := api.VolumeCreate(ctx, client.VolumeCreateOptions{
		Name: name, Driver: localDriver,
		Labels: map[string]string{recordLabel: r.ContainerID, recordDataLabel: string(data)},
	})
	if err != nil {
		return fmt.Errorf("recording the move of %s on %s: %w", r.Container, r.Source, err)
	}
	if v.Volume.Labels[recordDataLabel] != string(data) {
		return r.lostTo(v.Volume.Labels)
	}
	l, err := api.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("label", recordLabel+"="+r.ContainerID)})
	if err != nil {
		return fmt.Errorf("listing the records of the move of %s: %w", r.Container, err)
	}
	var newer map[string]string
	newest, hasPrev := r.Seq, prev == 0
	for _, v := range l.Items {
		rec, ok := parseRecord(v.Labels)
		if ok && rec.Seq > newest {
			newer, newest = v.Labels, rec.Seq
		}
		hasPrev = hasPrev || ok && rec.Seq == prev
	}
	if newer != nil || !hasPrev {
		// Ours came after the other run's pruned the number, or after
		// the record was removed: it is stale the moment it exists.
		_, _ = api.VolumeRemove(ctx, name, client.VolumeRemoveOptions{})
		if newer == nil {
			return &goneError{container: r.Container, source: r.Source}
		}
		return r.lostTo(newer)
	}
	var errs []error
	for _, v := range l.Items {
		if rec, ok := parseRecord(v.Labels); ok && rec.Seq < r.Seq {
			if _, err := api.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// lostTo is the error of a write that found the other run's record in
// labels.
func (r *moveRecord) lostTo(labels map[string]string) error {
	other, ok := parseRecord(labels)
	if !ok {
		other = &moveRecord{Container: r.Container}
	}
	other.Container = r.Container
	e := &busyError{rec: other, left: defaultLeaseTTL}
	if other.Lease != nil {
		e.age = time.Since(other.Lease.Renewed)
		e.left = max(other.Lease.TTL+clockSlack-e.age, time.Second)
	}
	return e
}

// prune removes the versions of r older than keep (all when keep is 0).
func (r *moveRecord) prune(ctx context.Context, api client.APIClient, keep int) error {
	l, err := api.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("label", recordLabel+"="+r.ContainerID)})
	if err != nil {
		return fmt.Errorf("listing the records of the move of %s: %w", r.Container, err)
	}
	var errs []error
	for _, v := range l.Items {
		if rec, ok := parseRecord(v.Labels); keep == 0 || ok && rec.Seq < keep {
			if _, err := api.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// remove deletes every version of r: the move is over.
func (r *moveRecord) remove(ctx context.Context, api client.APIClient) error {
	if h := r.holder; h != nil {
		// No renewal may make it again.
		h.mu.Lock()
		defer h.mu.Unlock()
		h.over = true
	}
	if err := r.prune(ctx, api, 0); err != nil {
		return fmt.Errorf("removing the record of the move of %s on %s (remove the volumes labelled %s=%s there): %w",
			r.Container, r.Source, recordLabel, r.ContainerID, err)
	}
	return nil
}

func parseRecord(labels map[string]string) (*moveRecord, bool) {
	var r moveRecord
	if err := json.Unmarshal([]byte(labels[recordDataLabel]), &r); err != nil || r.ContainerID == "" {
		return nil, false
	}
	return &r, true
}

// records reads the newest version of every move recorded on an engine,
// keyed by container ID.
func records(ctx context.Context, api client.APIClient) (map[string]*moveRecord, error) {
	l, err := api.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("label", recordLabel)})
	if err != nil {
		return nil, fmt.Errorf("listing move records: %w", err)
	}
	out := map[string]*moveRecord{}
	for _, v := range l.Items {
		r, ok := parseRecord(v.Labels)
		if !ok || !strings.HasPrefix(v.Name, recordPrefix) {
			continue
		}
		if old := out[r.ContainerID]; old == nil || old.Seq < r.Seq {
			r.createdAt, _ = time.Parse(time.RFC3339Nano, v.CreatedAt)
			r.known = r.Seq
			out[r.ContainerID] = r
		}
	}
	return out, nil
}

// recordOf reads the move recorded for the container with ID id, nil if
// there is none.
func recordOf(ctx context.Context, api client.APIClient, id string) (*moveRecord, error) {
	all, err := records(ctx, api)
	if err != nil {
		return nil, err
	}
	return all[id], nil
}

// pruneRecords removes the records of containers that are gone: the user
// removed a moved-out container, and nothing is left to finish or undo.
func pruneRecords(ctx context.Context, api client.APIClient) {
	all, err := records(ctx, api)
	if err != nil {
		return
	}
	for id, r := range all {
		if _, err := api.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); cerrdefs.IsNotFound(err) {
			_ = r.remove(ctx, api)
		}
	}
}

// InterruptedMove is a move that did not finish, and the two commands
// that finish or undo it.
type InterruptedMove struct {
	Container string    `json:"container"`
	Source    string    `json:"source"`
	Target    string    `json:"target"`
	Phase     string    `json:"phase"`
	Updated   time.Time `json:"updated"`
	Finish    string    `json:"finish"`
	Rollback  string    `json:"rollback"`
}

func (r *moveRecord) interrupted() InterruptedMove {
	return InterruptedMove{Container: r.Container, Source: r.Source, Target: r.Target, Phase: r.Phase,
		Updated: r.Updated, Finish: r.FinishCommand(), Rollback: r.RollbackCommand()}
}

// String says it for a user.
func (im InterruptedMove) String() string {
	return fmt.Sprintf("the move of %s to %s has not finished (its last phase done: %s, at %s): unless a docker migrate of it still runs, finish it with `%s`, or undo it with `%s`",
		im.Container, im.Target, im.Phase, im.Updated.Local().Format(time.TimeOnly), im.Finish, im.Rollback)
}

// interrupted lists the unfinished moves recorded on an engine, by
// container.
func interrupted(ctx context.Context, api client.APIClient) ([]InterruptedMove, error) {
	all, err := records(ctx, api)
	if err != nil {
		return nil, err
	}
	var out []InterruptedMove
	for _, r := range all {
		if !r.Done() {
			out = append(out, r.interrupted())
		}
	}
	slices.SortFunc(out, func(a, b InterruptedMove) int { return strings.Compare(a.Container, b.Container) })
	return out, nil
}

// addOnce appends s to list unless it is there.
func addOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
