package federation_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/tests/harness"
)

// readParts is how many concurrent reads TestConcurrentReadsOfUncopiedFile
// makes, each of its own MiB of the file.
const readParts = 64

// partSums prints, for each MiB i of /data/big, "i md5"; with & the reads
// run all at once. A failed read shows as a wrong sum, with dd's complaint
// after it.
func partSums(concurrent bool) string {
	bg := ""
	if concurrent {
		bg = "&"
	}
	return fmt.Sprintf(`cd /tmp; i=0; while [ $i -lt %[1]d ]; do
  (dd if=/data/big bs=1M skip=$i count=1 iflag=fullblock 2>$i.err | md5sum > $i.sum) %[2]s
  i=$((i+1))
done
wait
i=0; while [ $i -lt %[1]d ]; do echo "$i $(cut -d' ' -f1 $i.sum) $(grep -iv records $i.err | tr '\n' ' ')"; i=$((i+1)); done`, readParts, bg)
}

// A container reads 64 parts of a large file at once, none of them copied
// yet: every read waits its turn at the source (which serves 16 requests of
// an export at a time and turns the rest away) rather than fail, and gets
// the source's bytes.
//
// The background copy is held with a pause where a fetched chunk is to be
// journaled (replica.chunk.before-log): its workers stop there, and so do
// the chunk fetches a read starts ahead of the background, so nothing of
// the file becomes local. A read does not wait for them: it takes the bytes
// it asked for from the source by themselves.
func TestConcurrentReadsOfUncopiedFile(t *testing.T) {
	src, dst := env.Hosts[0], env.Hosts[1]
	env.PluginLogOnFailure(t)
	vol := src.Unique(t, "v")
	src.MustDocker(t, "volume", "create", "-d", "cargo", vol)
	src.Run(t, "-v", vol+":/data", env.Image, "sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > /data/big", readParts<<20))
	want := src.Run(t, "-v", vol+":/data:ro", env.Image, "sh", "-c", partSums(false))
	wantWhole := src.Run(t, "-v", vol+":/data:ro", env.Image, "sh", "-c", "md5sum < /data/big")

	armFailpoints(t, dst, "replica.chunk.before-log=pause")
	federate(t, src, dst, vol)
	// Released before the volume is removed, whatever happens: removing it
	// waits for the fetches the pause holds.
	t.Cleanup(func() { os.Remove(filepath.Join(stateDir(dst), "failpoints")) })

	start := time.Now()
	got := dst.Run(t, "-v", vol+":/data:ro", env.Image, "sh", "-c", partSums(true))
	t.Logf("%d concurrent reads of 1 MiB took %v", readParts, time.Since(start).Round(time.Millisecond))
	wantLines, gotLines := strings.Split(want, "\n"), strings.Split(got, "\n")
	if len(wantLines) != readParts {
		t.Fatalf("the source's sums:\n%s", want)
	}
	for i := range wantLines {
		if i >= len(gotLines) || strings.TrimSpace(gotLines[i]) != strings.TrimSpace(wantLines[i]) {
			t.Fatalf("concurrent reads differ from the source's bytes\n--- got\n%s\n--- want\n%s", got, want)
		}
	}
	// Nothing of the file was local: every read was served from the source.
	if st := dst.VolumeStatus(t, vol); st["state"] != "copying" || copied(st) != 0 {
		t.Fatalf("the background copy was not held: %v", st)
	}

	armFailpoints(t, dst, "")
	waitState(t, dst, vol, "complete", 2*time.Minute)
	if got := dst.Run(t, "-v", vol+":/data:ro", env.Image, "sh", "-c", "md5sum < /data/big"); got != wantWhole {
		t.Fatalf("the copied file: md5 %s, the source's %s", got, wantWhole)
	}
	harness.Eventually(t, time.Minute, "the volume settles", func() error {
		if st := dst.VolumeStatus(t, vol); st["settled"] != true {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
}
