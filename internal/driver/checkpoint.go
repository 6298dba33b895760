package driver

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/cargo-migrate/cargo/internal/state"
	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// A live move carries a container's CRIU checkpoint from the source host
// to the target host through the peer service, as volumes are carried,
// with two kinds of volume that hold no data:
//
//   - on the source, -o checkpoint=ID/NAME opens an export of the
//     checkpoint directory ID/checkpoints/NAME of the engine's containers
//     directory; removing the volume closes the export;
//   - on the target, -o checkpoint-from=TICKET -o container=ID
//     -o checkpoint-name=NAME fetches the whole checkpoint into the
//     target container's ID/checkpoints/NAME, the only place engines
//     restore from, before the create returns; removing the volume
//     forgets the record (the checkpoint is the engine's to delete).
//
// Nothing else of the engine's containers directory is touched
// (checkpoint_dir.go).
const (
	kindCheckpointExport state.Kind = "checkpoint-export"
	kindCheckpoint       state.Kind = "checkpoint"
)

// The create options of the two kinds.
const (
	optCheckpoint     = "checkpoint"
	optCheckpointFrom = "checkpoint-from"
	optContainer      = "container"
	optCheckpointName = "checkpoint-name"
)

func isCheckpointKind(k state.Kind) bool { return k == kindCheckpointExport || k == kindCheckpoint }

// checkpointKindOf tells whether the options ask for a checkpoint volume,
// and which; ok is false when they do not.
func checkpointKindOf(opts map[string]string) (kind state.Kind, ok bool, err error) {
	_, cp := opts[optCheckpoint]
	_, from := opts[optCheckpointFrom]
	if !cp && !from {
		return "", false, nil
	}
	if cp && from {
		return "", true, fmt.Errorf("options %s and %s exclude each other", optCheckpoint, optCheckpointFrom)
	}
	which := optCheckpointFrom
	if cp {
		which = optCheckpoint
	}
	for _, other := range []string{"export", "from"} {
		if _, set := opts[other]; set {
			return "", true, fmt.Errorf("options %s and %s exclude each other", other, which)
		}
	}
	if cp {
		return kindCheckpointExport, true, onlyOptions(opts, optCheckpoint, "to")
	}
	if err := onlyOptions(opts, optCheckpointFrom, optContainer, optCheckpointName); err != nil {
		return "", true, err
	}
	for _, k := range []string{optContainer, optCheckpointName} {
		if _, set := opts[k]; !set {
			return "", true, fmt.Errorf("option %s=... needs %s=... too", optCheckpointFrom, k)
		}
	}
	return kindCheckpoint, true, nil
}

// checkpointRef names one checkpoint of one container of the engine.
type checkpointRef struct {
	Container, Name string
}

var (
	// Full container IDs only: a short one could name another container.
	containerIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// As the engine names checkpoints; never ".", ".." or a path.
	checkpointNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
)

// maxCheckpointName keeps the fetch's temporary directory,
// fetchPrefix+NAME, within a file name's 255 bytes.
const maxCheckpointName = 200

// parseCheckpointRef reads the ID/NAME of -o checkpoint=.
func parseCheckpointRef(s string) (checkpointRef, error) {
	id, name, ok := strings.Cut(s, "/")
	if !ok {
		return checkpointRef{}, fmt.Errorf("want CONTAINER-ID/CHECKPOINT-NAME, got %q", s)
	}
	r := checkpointRef{Container: id, Name: name}
	return r, r.validate()
}

// validate refuses anything but a full container ID and a checkpoint
// name, so that the two can only name ID/checkpoints/NAME.
func (r checkpointRef) validate() error {
	if !containerIDRE.MatchString(r.Container) {
		return fmt.Errorf("container %q: want the container's full ID, 64 hex digits (docker inspect -f '{{.Id}}' CONTAINER)", r.Container)
	}
	if len(r.Name) > maxCheckpointName || !checkpointNameRE.MatchString(r.Name) {
		return fmt.Errorf("checkpoint name %q: want at most %d of [a-zA-Z0-9_.-], starting with a letter or digit", r.Name, maxCheckpointName)
	}
	return nil
}

func (r checkpointRef) String() string { return r.Container + "/" + r.Name }

// path is the checkpoint's directory, relative to the containers
// directory.
func (r checkpointRef) path() string { return r.Container + "/checkpoints/" + r.Name }

// lockName is the lock that serialises fetches into one checkpoint's
// place; no volume name has a colon or a slash.
func (r checkpointRef) lockName() string { return "checkpoint:" + r.String() }

// errCheckpointMount is why a checkpoint volume cannot be mounted.
func errCheckpointMount(v *state.Volume) error {
	if v.Kind == kindCheckpointExport {
		return fmt.Errorf("volume %q stands for the export of checkpoint %s and holds no data", v.Name, v.Options[optCheckpoint])
	}
	return fmt.Errorf("volume %q stands for checkpoint %q of container %s and holds no data", v.Name, v.Options[optCheckpointName], v.Options[optContainer])
}

// checkpointStatusLocked is the Status of a checkpoint volume. Called with
// d.mu held.
//
// Keys of the export (source): state (exporting, complete once the target
// has the checkpoint, failed when the export is not served), container,
// checkpoint, to, export_id, ticket, files_total and bytes_total while
// served, completed_at and report once complete, error.
//
// Keys of the fetch (target): state (copying, then complete, or failed
// with error), container, checkpoint, source, files_total, bytes_total,
// started_at; once complete, completed_at and duration_ms, the fetch's
// wall time in milliseconds.
func (d *Driver) checkpointStatusLocked(v *state.Volume) map[string]any {
	m := map[string]any{}
	if v.Kind == kindCheckpointExport {
		ref, _ := parseCheckpointRef(v.Options[optCheckpoint])
		e := v.Export
		m["container"], m["checkpoint"] = ref.Container, ref.Name
		m["export_id"], m["ticket"] = e.ID, e.Ticket
		if e.To != "" {
			m["to"] = e.To
		}
		switch oe := d.exports[v.Name]; {
		case !e.Open():
			m["state"] = string(volstatus.StateComplete)
			m["completed_at"], m["report"] = volstatus.Time(e.CompletedAt), e.Report
		case oe != nil:
			files, bytes := oe.exp.Totals()
			m["state"], m["files_total"], m["bytes_total"] = string(volstatus.StateExporting), files, bytes
		default:
			why := "the checkpoint is no longer exported"
			if f := d.failed[v.Name]; f != nil {
				why = f.err.Error()
			}
			m["state"] = string(volstatus.StateFailed)
			m["error"] = why + "; remove this volume and export the checkpoint again"
		}
	} else {
		fr := v.Federation
		m["container"], m["checkpoint"] = v.Options[optContainer], v.Options[optCheckpointName]
		m["source"] = fr.Source
		m["files_total"], m["bytes_total"] = fr.FilesTotal, fr.BytesTotal
		m["started_at"] = volstatus.Time(fr.StartedAt)
		switch f := d.failed[v.Name]; {
		case !fr.CompletedAt.IsZero():
			m["state"] = string(volstatus.StateComplete)
			m["completed_at"] = volstatus.Time(fr.CompletedAt)
			m["duration_ms"] = fr.CompletedAt.Sub(fr.StartedAt).Milliseconds()
		case f != nil:
			m["state"] = string(volstatus.StateFailed)
			m["error"] = f.err.Error() + "; remove this volume, then move the container again"
		default:
			m["state"] = string(volstatus.StateCopying)
		}
	}
	if d.recovering[v.Name] != nil {
		m["error"] = errRecovering
	}
	return m
}
