package pluginenv

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFromEnvExplicit(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		wantListen string
		wantAdv    string
		wantErr    string
	}{
		{"advertise with port", map[string]string{"ADVERTISE_ADDR": "198.18.0.1:9000"}, ":7450", "198.18.0.1:9000", ""},
		{"advertise takes listen port", map[string]string{"ADVERTISE_ADDR": "198.18.0.1", "LISTEN_ADDR": ":8000"}, ":8000", "198.18.0.1:8000", ""},
		{"ipv6 advertise", map[string]string{"ADVERTISE_ADDR": "[fd00::1]"}, ":7450", "[fd00::1]:7450", ""},
		{"listen ip is advertised", map[string]string{"LISTEN_ADDR": "198.18.0.7:7450"}, "198.18.0.7:7450", "198.18.0.7:7450", ""},
		{"bad listen", map[string]string{"LISTEN_ADDR": "nonsense", "ADVERTISE_ADDR": "x"}, "", "", "LISTEN_ADDR"},
		{"bad port", map[string]string{"LISTEN_ADDR": ":99999", "ADVERTISE_ADDR": "x"}, "", "", "bad port"},
		{"bad debug", map[string]string{"DEBUG": "maybe", "ADVERTISE_ADDR": "x"}, "", "", "DEBUG"},
		{"metrics", map[string]string{"METRICS_ADDR": "127.0.0.1:9450", "ADVERTISE_ADDR": "198.18.0.1"}, ":7450", "198.18.0.1:7450", ""},
		{"metrics without a port", map[string]string{"METRICS_ADDR": "127.0.0.1", "ADVERTISE_ADDR": "x"}, "", "", "METRICS_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := FromEnv(env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ListenAddr != tt.wantListen || c.AdvertiseAddr != tt.wantAdv {
				t.Fatalf("got listen %q advertise %q, want %q %q", c.ListenAddr, c.AdvertiseAddr, tt.wantListen, tt.wantAdv)
			}
		})
	}
}

func TestDetectAdvertiseIP(t *testing.T) {
	ip := func(s ...string) []net.IP {
		var out []net.IP
		for _, x := range s {
			out = append(out, net.ParseIP(x))
		}
		return out
	}
	tests := []struct {
		name    string
		ifs     []Interface
		route   string
		want    string
		wantErr bool
	}{
		{"default route wins", []Interface{
			{Name: "eth1", Up: true, Addrs: ip("198.18.0.9")},
			{Name: "eth0", Up: true, Addrs: ip("fe80::1", "198.18.0.2")},
		}, "eth0", "198.18.0.2", false},
		{"no route: skip docker bridge and veth", []Interface{
			{Name: "docker0", Up: true, Addrs: ip("198.18.0.65")},
			{Name: "veth12", Up: true, Addrs: ip("198.18.0.70")},
			{Name: "eth0", Up: true, Addrs: ip("198.18.0.3")},
		}, "", "198.18.0.3", false},
		{"down interface skipped", []Interface{
			{Name: "eth0", Up: false, Addrs: ip("198.18.0.3")},
			{Name: "eth1", Up: true, Addrs: ip("198.18.0.4")},
		}, "", "198.18.0.4", false},
		{"link-local only", []Interface{{Name: "eth0", Up: true, Addrs: ip("169.254.1.1", "fe80::2")}}, "", "", true},
		{"nothing", nil, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := DetectAdvertiseIP(tt.ifs, tt.route)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %q, %v; want %q (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseDefaultRoute(t *testing.T) {
	table := "Iface\tDestination\tGateway\tFlags\n" +
		"eth1\t001212C6\t00000000\t0001\n" +
		"eth0\t00000000\t010012C6\t0003\n"
	if got := parseDefaultRoute(bufio.NewScanner(strings.NewReader(table))); got != "eth0" {
		t.Fatalf("got %q, want eth0", got)
	}
	if got := parseDefaultRoute(bufio.NewScanner(strings.NewReader("Iface\tDestination\n"))); got != "" {
		t.Fatalf("got %q, want none", got)
	}
}

func TestStateDir(t *testing.T) {
	tests := []struct {
		name       string
		dirs       []string
		want       string
		wantLegacy bool
	}{
		{"fresh install", nil, "/mnt/state", false},
		{"own directory mounted", []string{"/mnt/state/volumes"}, "/mnt/state", false},
		{"whole plugins directory mounted, old layout", []string{"/mnt/state/cargo/volumes"}, "/mnt/state/cargo", true},
		// A volume may be called cargo: its state is in volumes/cargo, never
		// in cargo/volumes, and the state at the top wins.
		{"both", []string{"/mnt/state/volumes", "/mnt/state/cargo/volumes"}, "/mnt/state", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, legacy := stateDir(func(p string) bool {
				for _, d := range tt.dirs {
					if d == p {
						return true
					}
				}
				return false
			})
			if dir != tt.want || legacy != tt.wantLegacy {
				t.Fatalf("stateDir = %q, %v; want %q, %v", dir, legacy, tt.want, tt.wantLegacy)
			}
		})
	}
}
