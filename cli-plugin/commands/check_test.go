package commands

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

func checkReport() *migrate.Report {
	return &migrate.Report{
		Container: "web", Source: "default", Target: "host2",
		Checks: []migrate.Check{
			{Name: "source engine reachable", OK: true},
			{Name: "target engine reachable", OK: true},
			{Name: "container exists", OK: true},
			{Name: "every mount can move", OK: true, Detail: "3 mount(s)"},
			{Name: "name free on target", Detail: `host2 already has a container named "web": remove or rename it first`},
			{Name: "image on target", OK: true, Detail: "will be copied from default"},
		},
		Mounts: []migrate.MountPlan{
			{Type: "volume", Name: "web-data", Driver: "cargo:latest", Destination: "/data", Action: "federate"},
			{Type: "tmpfs", Destination: "/run", Action: "recreate"},
			{Type: "bind", Source: "/etc/nginx", Destination: "/etc/nginx", Action: "skip"},
		},
		ImageCopy: true,
	}
}

func TestPrintReportGolden(t *testing.T) {
	noMounts := checkReport()
	noMounts.Mounts = nil
	tests := []struct {
		name, format string
		r            *migrate.Report
	}{
		{"check", "", checkReport()},
		{"check-no-mounts", "", noMounts},
		{"check-template", "{{.Container}} {{.Source}} -> {{.Target}} ok={{.OK}}", checkReport()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printItem(&b, mustFormat(t, tt.format), tt.r, printReport); err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, b.Bytes())
		})
	}
}

func TestPrintReportJSON(t *testing.T) {
	var b bytes.Buffer
	if err := printItem(&b, mustFormat(t, "json"), checkReport(), printReport); err != nil {
		t.Fatal(err)
	}
	var back migrate.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("%v: %s", err, b.Bytes())
	}
	if !reflect.DeepEqual(&back, checkReport()) {
		t.Fatalf("got back %+v", back)
	}
}
