package driver

import (
	"os"
	"syscall"
	"testing"
)

func statUID(t *testing.T, fi os.FileInfo) uint32 {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatal("no stat_t")
	}
	return st.Uid
}
