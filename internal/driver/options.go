package driver

import (
	"github.com/cargo-migrate/cargo/internal/state"

	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// createOptions are the -o options `docker volume create -d cargo` accepts.
type createOptions struct {
	UID  int
	GID  int
	Mode uint32
}

var optionHelp = map[string]string{
	"uid":  "owner of the volume's top directory (number)",
	"gid":  "group of the volume's top directory (number)",
	"mode": "permissions of the volume's top directory (octal, e.g. 0770)",
}

func validOptions() string {
	return strings.Join(slices.Sorted(maps.Keys(optionHelp)), ", ")
}

func parseCreateOptions(opts map[string]string) (createOptions, error) {
	o := createOptions{UID: 0, GID: 0, Mode: 0o755}
	for k, v := range opts {
		switch k {
		case "uid", "gid":
			n, err := strconv.ParseUint(v, 10, 31)
			if err != nil {
				return o, fmt.Errorf("option %s=%q: want a numeric id such as 1000", k, v)
			}
			if k == "uid" {
				o.UID = int(n)
			} else {
				o.GID = int(n)
			}
		case "mode":
			n, err := strconv.ParseUint(v, 8, 32)
			if err != nil || n > 0o7777 {
				return o, fmt.Errorf("option mode=%q: want octal permissions such as 0755", v)
			}
			o.Mode = uint32(n)
		default:
			return o, fmt.Errorf("unknown option %q (valid options: %s)", k, validOptions())
		}
	}
	return o, nil
}

// kindOf tells from the options which kind of volume is asked for:
// export=VOLUME opens an export, from=TICKET federates a volume from
// another host, checkpoint= and checkpoint-from= carry a container's
// checkpoint (checkpoint.go), anything else is a local volume.
func kindOf(opts map[string]string) (state.Kind, error) {
	if kind, ok, err := checkpointKindOf(opts); ok || err != nil {
		return kind, err
	}
	_, exp := opts["export"]
	_, from := opts["from"]
	switch {
	case exp && from:
		return "", fmt.Errorf("options export and from exclude each other")
	case exp:
		if d, ok := opts["driver"]; ok && d != "local" {
			return "", fmt.Errorf("option driver=%q: only volumes of the local driver (driver=local) or cargo volumes (no driver option) can be exported", d)
		}
		return state.KindExport, onlyOptions(opts, "export", "to", "driver")
	case from:
		// context names the source's docker context, for the migration
		// tool to find the export again; the plugin only shows it.
		// copy=after-mount holds the background copy until the container
		// using it has started (see copyHold).
		if c, ok := opts["copy"]; ok && c != "after-mount" {
			return "", fmt.Errorf("option copy=%q: the one value is after-mount (hold the background copy until the volume is first mounted)", c)
		}
		return state.KindFederated, onlyOptions(opts, "from", "context", "copy")
	}
	return state.KindLocal, nil
}

func onlyOptions(opts map[string]string, valid ...string) error {
	for k := range opts {
		if !slices.Contains(valid, k) {
			return fmt.Errorf("unknown option %q with %s=... (valid options: %s)", k, valid[0], strings.Join(valid, ", "))
		}
	}
	return nil
}
