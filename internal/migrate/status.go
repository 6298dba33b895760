package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/volstatus"
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
	Settled     bool            `json:"settled,omitempty"`
	State       volstatus.State `json:"state"`
	Error       string          `json:"error,omitempty"`
	FilesCopied int64           `json:"files_copied"`
	FilesTotal  int64           `json:"files_total"`
	BytesCopied int64           `json:"bytes_copied"`
	BytesTotal  int64           `json:"bytes_total"`
	Rate        int64           `json:"rate"`
	ETA         string          `json:"eta"`
	StartedAt   time.Time       `json:"started_at,omitzero"`
	UpdatedAt   time.Time       `json:"updated_at,omitzero"`
	CompletedAt time.Time       `json:"completed_at,omitzero"`
}

// Copying reports whether the volume's copy is still under way: copying
// or stalled. The other states are final.
func (s VolumeStatus) Copying() bool {
	return s.State == volstatus.StateCopying || s.State == volstatus.StateStalled
}

// statuses reports the moved cargo volumes of the named containers, or of
// every container on the engine when names is empty. Volumes that never
// moved are left out.
func statuses(ctx context.Context, api client.APIClient, names []string) ([]VolumeStatus, error) {
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
			if s, ok := volumeStatus(strings.TrimPrefix(insp.Container.Name, "/"), m.Name, volstatus.Parse(v.Volume.Status)); ok {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// volumeStatus is a cargo volume's copy; ok is false for a volume that
// never moved.
func volumeStatus(ctr, vol string, st volstatus.Status) (VolumeStatus, bool) {
	if st.Source == "" {
		return VolumeStatus{}, false
	}
	s := VolumeStatus{
		Container: ctr, Volume: vol, Source: st.Source, SourceContext: st.SourceContext,
		Settled: st.Settled, State: st.State, Error: st.Error,
		FilesCopied: st.FilesCopied, FilesTotal: st.FilesTotal,
		BytesCopied: st.BytesCopied, BytesTotal: st.BytesTotal, Rate: st.Rate,
		StartedAt:   volstatus.ParseTime(st.StartedAt),
		UpdatedAt:   volstatus.ParseTime(st.UpdatedAt),
		CompletedAt: volstatus.ParseTime(st.CompletedAt),
	}
	s.ETA = eta(s)
	return s, true
}

func eta(s VolumeStatus) string {
	switch {
	case s.State == volstatus.StateComplete:
		return "done"
	case s.Rate <= 0:
		return "-"
	}
	left := time.Duration(float64(s.BytesTotal-s.BytesCopied) / float64(s.Rate) * float64(time.Second))
	return fmt.Sprint(left.Round(time.Second))
}
