package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// VolumeStatus is the copy state of one moved volume of one container,
// read from the volume's Status on the engine it moved to.
type VolumeStatus struct {
	Container string `json:"container"`
	Volume    string `json:"volume"`
	Source    string `json:"source"`
	// SourceContext is the docker context the volume moved from, when
	// docker migrate moved it.
	SourceContext string `json:"source_context,omitempty"`
	// Settled is set once the copy is complete and the volume no longer
	// depends on the source.
	Settled     bool      `json:"settled,omitempty"`
	State       string    `json:"state"`
	Error       string    `json:"error,omitempty"`
	FilesCopied int64     `json:"files_copied"`
	FilesTotal  int64     `json:"files_total"`
	BytesCopied int64     `json:"bytes_copied"`
	BytesTotal  int64     `json:"bytes_total"`
	Rate        int64     `json:"rate"`
	ETA         string    `json:"eta"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
}

// Statuses reports the moved cargo volumes of the named containers, or of
// every container on the engine when names is empty. Volumes that never
// moved are left out.
func Statuses(ctx context.Context, api client.APIClient, names []string) ([]VolumeStatus, error) {
	if len(names) == 0 {
		l, err := api.ContainerList(ctx, client.ContainerListOptions{All: true})
		if err != nil {
			return nil, err
		}
		for _, c := range l.Items {
			if len(c.Names) > 0 {
				names = append(names, strings.TrimPrefix(c.Names[0], "/"))
			}
		}
	}
	var out []VolumeStatus
	for _, n := range names {
		insp, err := api.ContainerInspect(ctx, n, client.ContainerInspectOptions{})
		if err != nil {
			return nil, err
		}
		for _, m := range insp.Container.Mounts {
			if m.Type != mount.TypeVolume || !isCargo(m.Driver) {
				continue
			}
			v, err := api.VolumeInspect(ctx, m.Name, client.VolumeInspectOptions{})
			if err != nil {
				return nil, err
			}
			if s, ok := volumeStatus(strings.TrimPrefix(insp.Container.Name, "/"), m.Name, v.Volume.Status); ok {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// volumeStatus reads a cargo volume's Status; ok is false for a volume
// that never moved.
func volumeStatus(ctr, vol string, st map[string]any) (VolumeStatus, bool) {
	src, _ := st["source"].(string)
	if src == "" {
		return VolumeStatus{}, false
	}
	num := func(k string) int64 { f, _ := st[k].(float64); return int64(f) }
	when := func(k string) time.Time {
		s, _ := st[k].(string)
		t, _ := time.Parse(time.RFC3339, s)
		return t
	}
	s := VolumeStatus{
		Container: ctr, Volume: vol, Source: src,
		FilesCopied: num("files_copied"), FilesTotal: num("files_total"),
		BytesCopied: num("bytes_copied"), BytesTotal: num("bytes_total"), Rate: num("rate"),
		StartedAt: when("started_at"), UpdatedAt: when("updated_at"), CompletedAt: when("completed_at"),
	}
	s.State, _ = st["state"].(string)
	s.SourceContext, _ = st["source_context"].(string)
	s.Settled, _ = st["settled"].(bool)
	s.Error, _ = st["error"].(string)
	s.ETA = eta(s)
	return s, true
}

func eta(s VolumeStatus) string {
	switch {
	case s.State == "complete":
		return "done"
	case s.Rate <= 0:
		return "-"
	}
	left := time.Duration(float64(s.BytesTotal-s.BytesCopied) / float64(s.Rate) * float64(time.Second))
	return fmt.Sprint(left.Round(time.Second))
}
