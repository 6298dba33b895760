package migrate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
)

func TestLayerPlan(t *testing.T) {
	const (
		C = container.ChangeModify
		A = container.ChangeAdd
		D = container.ChangeDelete
	)
	tests := []struct {
		name    string
		changes []container.FilesystemChange
		mounts  []string
		want    string
	}{
		{"nothing", nil, nil, ""},
		{"mount points and what is under them stay", []container.FilesystemChange{
			{Kind: A, Path: "/data"}, {Kind: C, Path: "/run"}, {Kind: A, Path: "/run/app"}, {Kind: A, Path: "/run/app/cache"}, {Kind: A, Path: "/data/x"},
		}, []string{"/data", "/run/app/cache"}, ""},
		{"an added directory moves whole", []container.FilesystemChange{
			{Kind: A, Path: "/app/sub/f"}, {Kind: A, Path: "/app"}, {Kind: A, Path: "/app/sub"}, {Kind: C, Path: "/etc"}, {Kind: C, Path: "/etc/motd"},
		}, nil, "A /app whole, C /etc, C /etc/motd"},
		{"deletions", []container.FilesystemChange{
			{Kind: C, Path: "/bin"}, {Kind: D, Path: "/bin/vi"}, {Kind: D, Path: "/usr/share"},
		}, nil, "C /bin, D /bin/vi, D /usr/share"},
		{"an added directory holding a mount point goes entry by entry", []container.FilesystemChange{
			{Kind: A, Path: "/srv"}, {Kind: A, Path: "/srv/data"}, {Kind: A, Path: "/srv/conf"}, {Kind: A, Path: "/srv/conf/a"},
		}, []string{"/srv/data"}, "A /srv/conf whole"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range layerPlan(tt.changes, tt.mounts) {
				s := fmt.Sprintf("%s %s", c.Kind, c.Path)
				if c.Whole {
					s += " whole"
				}
				got = append(got, s)
			}
			if g := strings.Join(got, ", "); g != tt.want {
				t.Errorf("got %q, want %q", g, tt.want)
			}
		})
	}
}

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
