// Package federation_test moves cargo volumes between real engines: the
// export on the source, the federated volume on the target, the lazy and
// background copy, faults in the middle of it, and what travels the wire.
package federation_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

var env *harness.Env

func TestMain(m *testing.M) {
	harness.Main(m, harness.Options{Prefix: "cgfed", Hosts: 3}, &env)
}

// fillScript writes a tree with every kind of entry a volume may hold;
// largeMB sizes its one large file.
func fillScript(largeMB int) string {
	return fmt.Sprintf(`set -e; cd /data
mkdir -p small "with space" "ünïcødé dir" empty/deeper sub
i=0; while [ $i -lt 300 ]; do echo "small file $i" > small/f$i; i=$((i+1)); done
head -c %d /dev/urandom > large.bin
echo space > "with space/file name.txt"
echo uni > "ünïcødé dir/ファイル ✓.txt"
ln -s small/f1 rel-link; ln -s /etc/passwd abs-link; ln -s nowhere dangling
echo hard > sub/hard1; ln sub/hard1 sub/hard2; ln sub/hard1 hard3
echo secret > secret; chmod 600 secret
echo owned > owned; chown -R 1000:1000 owned sub
mkfifo fifo`, largeMB<<20)
}

// listScript prints every entry's type, mode, owner, link count, and its
// content checksum or link target, one line each, in a stable order.
const listScript = `cd /data && find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r f; do
  t=$(stat -c %F "$f"); line="$f|$t|$(stat -c '%a|%u:%g' "$f")"
  case "$t" in
    directory) ;;
    "regular file"|"regular empty file") line="$line|$(stat -c %h "$f")|$(md5sum < "$f" | cut -d' ' -f1)";;
    "symbolic link") line="$line|$(readlink "$f")";;
    *) line="$line|$(stat -c %h "$f")";;
  esac
  echo "$line"
done`

func listing(t *testing.T, h *harness.Host, vol string) string {
	t.Helper()
	return h.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", listScript)
}

// export opens an export of vol on src and returns the export volume's
// name and its ticket.
func export(t *testing.T, src, dst *harness.Host, vol string) (ctrl, ticket string) {
	t.Helper()
	ctrl = src.Unique(t, "export")
	src.MustDocker(t, "volume", "create", "-d", "cargo", "-o", "export="+vol, "-o", "to="+dst.Context, ctrl)
	st := src.VolumeStatus(t, ctrl)
	if st["state"] != "exporting" || st["volume"] != vol || st["to"] != dst.Context {
		t.Fatalf("export status: %v", st)
	}
	return ctrl, st["ticket"].(string)
}

// federate creates on dst the federated volume of vol from src.
func federate(t *testing.T, src, dst *harness.Host, vol string) (ctrl string) {
	t.Helper()
	ctrl, ticket := export(t, src, dst, vol)
	dst.MustDocker(t, "volume", "create", "-d", "cargo", "-o", "from="+ticket, vol)
	t.Cleanup(func() { dst.Docker(harness.Ctx(t), "volume", "rm", "-f", vol) })
	return ctrl
}

// waitState waits until vol's Status on h says state, and returns it.
func waitState(t *testing.T, h *harness.Host, vol, state string, timeout time.Duration) map[string]any {
	t.Helper()
	var st map[string]any
	harness.Eventually(t, timeout, fmt.Sprintf("%s on %s reaches %s", vol, h.Name, state), func() error {
		st = h.VolumeStatus(t, vol)
		if st["state"] != state {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	return st
}

// copied returns bytes_copied from a status.
func copied(st map[string]any) int64 {
	f, _ := st["bytes_copied"].(float64)
	return int64(f)
}

// midCopy waits until a copy is under way: some bytes but not all.
func midCopy(t *testing.T, h *harness.Host, vol string) int64 {
	t.Helper()
	var n int64
	harness.Eventually(t, time.Minute, "the copy is under way", func() error {
		st := h.VolumeStatus(t, vol)
		n = copied(st)
		total, _ := st["bytes_total"].(float64)
		if st["state"] != "copying" || n == 0 || n >= int64(total) {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	return n
}

// throttle limits what h sends, so that copies last long enough to break
// them in the middle.
func throttle(t *testing.T, h *harness.Host, rate string) { h.Throttle(t, rate) }

// source prepares a filled volume on src and its listing.
func source(t *testing.T, src *harness.Host, largeMB int) (vol, want string) {
	t.Helper()
	vol = src.Unique(t, "v")
	src.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	src.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", fillScript(largeMB))
	return vol, listing(t, src, vol)
}

func pluginPID(t *testing.T, h *harness.Host) int {
	t.Helper()
	pids := h.Processes(t, "cargo-volume-pl")
	if len(pids) != 1 {
		t.Fatalf("plugin processes on %s: %v", h.Name, pids)
	}
	return pids[0]
}

func killPlugin(t *testing.T, h *harness.Host) {
	t.Helper()
	old := pluginPID(t, h)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the engine restarts the plugin", func() error {
		if now := h.Processes(t, "cargo-volume-pl"); len(now) != 1 || now[0] == old {
			return fmt.Errorf("plugin processes %v", now)
		}
		return nil
	})
}

func sameListing(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s differs from the source\n--- got\n%s\n--- want\n%s", what, got, want)
	}
	if strings.Count(want, "\n") < 300 {
		t.Fatalf("the listing is too short to mean anything:\n%s", want)
	}
}
