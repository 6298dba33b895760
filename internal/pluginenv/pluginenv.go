// Package pluginenv reads the managed plugin's settings from its environment
// (set with `docker plugin set cargo KEY=VALUE`).
package pluginenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// DefaultPort is the peer service's TCP port when LISTEN_ADDR names none.
const DefaultPort = 7450

// DefaultStateDir is where config.json mounts the plugin's state: the
// host's /var/lib/docker/plugins/cargo (the mount "state"), and nothing
// else of the host's plugins directory.
const DefaultStateDir = "/mnt/state"

// legacyStateDir is where the state was when the mount was the host's
// whole /var/lib/docker/plugins: its cargo directory, the same host
// directory the mount is now.
const legacyStateDir = DefaultStateDir + "/cargo"

// Config is the plugin's runtime configuration.
type Config struct {
	// StateDir holds volume records and data; a bind mount of the host's
	// /var/lib/docker/plugins/cargo, so it outlives plugin upgrades and
	// removal.
	StateDir string
	// LegacyState is set when the state mount is still the whole plugins
	// directory of the host (state.source set to it by hand) and StateDir
	// is its cargo directory: the plugin works, and says how to mount only
	// its own directory.
	LegacyState bool
	// MountDir is the propagated mount where volumes are mounted for the
	// engine to see.
	MountDir string
	// RunDir holds the plugin's private mounts (FUSE views of sources).
	RunDir string
	// EngineVolumes is the engine's volumes directory, mounted read only,
	// where local-driver volumes are read for export.
	EngineVolumes string
	// EngineContainers is the engine's containers directory, where a live
	// move reads a container's checkpoint (ID/checkpoints/NAME) on the
	// source and places it on the target; nothing else in it is touched.
	EngineContainers string
	// Socket is the plugin API socket the engine connects to.
	Socket string
	// ListenAddr is the peer service's listen address (host:port).
	ListenAddr string
	// MetricsAddr is where Prometheus metrics are served (host:port);
	// empty: not served.
	MetricsAddr string
	// AdvertiseAddr is the host:port other hosts use to reach the peer service.
	AdvertiseAddr string
	// AdvertiseSource says how AdvertiseAddr was chosen, for the log.
	AdvertiseSource string
	Debug           bool
}

// FromEnv builds the configuration from getenv, detecting the advertised
// address from the host's network when ADVERTISE_ADDR is unset.
func FromEnv(getenv func(string) string) (*Config, error) {
	c := &Config{
		StateDir:         or(getenv("CARGO_STATE_DIR"), DefaultStateDir),
		MountDir:         or(getenv("CARGO_MOUNT_DIR"), "/mnt/volumes"),
		RunDir:           or(getenv("CARGO_RUN_DIR"), "/run/cargo"),
		EngineVolumes:    or(getenv("CARGO_ENGINE_VOLUMES"), "/mnt/engine-volumes"),
		EngineContainers: or(getenv("CARGO_ENGINE_CONTAINERS"), "/mnt/engine-containers"),
		Socket:           or(getenv("CARGO_SOCKET"), "/run/docker/plugins/cargo.sock"),
		ListenAddr:       or(getenv("LISTEN_ADDR"), fmt.Sprintf(":%d", DefaultPort)),
	}
	if getenv("CARGO_STATE_DIR") == "" {
		c.StateDir, c.LegacyState = stateDir(isDir)
	}
	if c.MetricsAddr = getenv("METRICS_ADDR"); c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || port == "" {
			return nil, fmt.Errorf("METRICS_ADDR=%q: want host:port, for instance 127.0.0.1:9450", c.MetricsAddr)
		}
	}
	if v := getenv("DEBUG"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("DEBUG=%q: want true or false", v)
		}
		c.Debug = b
	}
	host, port, err := net.SplitHostPort(c.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("LISTEN_ADDR=%q: want host:port or :port: %w", c.ListenAddr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("LISTEN_ADDR=%q: bad port %q", c.ListenAddr, port)
	}
	if adv := getenv("ADVERTISE_ADDR"); adv != "" {
		c.AdvertiseAddr, c.AdvertiseSource = withPort(adv, port), "ADVERTISE_ADDR"
		return c, nil
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		c.AdvertiseAddr, c.AdvertiseSource = net.JoinHostPort(host, port), "LISTEN_ADDR"
		return c, nil
	}
	ifs, err := hostInterfaces()
	if err != nil {
		return nil, fmt.Errorf("detecting ADVERTISE_ADDR: %w", err)
	}
	ip, src, err := DetectAdvertiseIP(ifs, defaultRouteInterface())
	if err != nil {
		return nil, err
	}
	c.AdvertiseAddr, c.AdvertiseSource = net.JoinHostPort(ip, port), src
	return c, nil
}

// stateDir tells where the state is in the state mount: at its top, unless
// the mount holds only an old layout's state, in its cargo directory.
func stateDir(isDir func(string) bool) (dir string, legacy bool) {
	if !isDir(DefaultStateDir+"/volumes") && isDir(legacyStateDir+"/volumes") {
		return legacyStateDir, true
	}
	return DefaultStateDir, false
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// withPort adds port to addr unless addr names one.
func withPort(addr, port string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), port)
}

// Interface is what detection needs to know of a network interface.
type Interface struct {
	Name  string
	Up    bool
	Addrs []net.IP
}

// DetectAdvertiseIP picks the address other hosts most likely reach us at:
// the first IPv4 address of the interface holding the default route; else
// the first global IPv4 address of an up interface that is not loopback
// nor a container bridge or veth. Neither is right on every network, which
// is why ADVERTISE_ADDR exists.
func DetectAdvertiseIP(ifs []Interface, defaultRoute string) (ip, source string, err error) {
	pick := func(i Interface) string {
		for _, a := range i.Addrs {
			if a4 := a.To4(); a4 != nil && a4.IsGlobalUnicast() {
				return a4.String()
			}
		}
		return ""
	}
	for _, i := range ifs {
		if i.Name == defaultRoute && i.Up {
			if a := pick(i); a != "" {
				return a, "default route via " + i.Name, nil
			}
		}
	}
	for _, i := range ifs {
		if !i.Up || isContainerInterface(i.Name) {
			continue
		}
		if a := pick(i); a != "" {
			return a, "first address of " + i.Name, nil
		}
	}
	return "", "", fmt.Errorf("no usable IPv4 address found to advertise; set one with `docker plugin set cargo ADVERTISE_ADDR=<ip>`")
}

func isContainerInterface(name string) bool {
	for _, p := range []string{"lo", "docker", "br-", "veth", "cni", "flannel", "cali", "virbr"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func hostInterfaces() ([]Interface, error) {
	nifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []Interface
	for _, ni := range nifs {
		i := Interface{Name: ni.Name, Up: ni.Flags&net.FlagUp != 0 && ni.Flags&net.FlagLoopback == 0}
		addrs, err := ni.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				i.Addrs = append(i.Addrs, n.IP)
			}
		}
		out = append(out, i)
	}
	return out, nil
}

// defaultRouteInterface reads the IPv4 default route's interface from
// /proc/net/route; "" when there is none.
func defaultRouteInterface() string {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return ""
	}
	defer f.Close()
	return parseDefaultRoute(bufio.NewScanner(f))
}

func parseDefaultRoute(s *bufio.Scanner) string {
	for s.Scan() {
		fields := strings.Fields(s.Text())
		// Iface Destination Gateway Flags ...; destination 00000000 is default.
		if len(fields) > 2 && fields[1] == "00000000" {
			return fields[0]
		}
	}
	return ""
}
