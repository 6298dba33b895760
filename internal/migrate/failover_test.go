package migrate

import (
	"strings"
	"testing"
)

func TestFailoverProgressWords(t *testing.T) {
	rows := []VolumeStatus{
		{Volume: "a", State: "complete", BytesCopied: 5, BytesTotal: 5},
		{Volume: "b", State: "copying", BytesCopied: 1 << 20, BytesTotal: 4 << 20, ETA: "3s"},
	}
	left := unfinished(rows)
	if len(left) != 1 || left[0] != "volume b is copying, 25% (1MiB of 4MiB), ETA 3s" {
		t.Errorf("unfinished %q", left)
	}
	if !unsettled(rows) || unsettled([]VolumeStatus{{Settled: true}}) {
		t.Error("unsettled")
	}
	if copyFailed(rows) != nil {
		t.Error("no copy failed")
	}
	err := copyFailed(append(rows, VolumeStatus{Volume: "c", State: "failed", Error: "export closed"}))
	if err == nil || !strings.Contains(err.Error(), "the copy of volume c failed: export closed") {
		t.Errorf("copyFailed = %v", err)
	}
}
