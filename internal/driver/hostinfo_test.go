package driver

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHostFacts(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, meminfo, cpuinfo string
		mem                    int64
		flags                  string
	}{
		{"x86", "MemTotal:  1000 kB\nMemAvailable:    2048 kB\n", "processor\t: 0\nflags\t\t: fpu  sse2 avx2\n\nprocessor\t: 1\nflags\t\t: fpu\n", 2 << 20, "fpu sse2 avx2"},
		{"arm64", "MemAvailable: 1 kB\n", "processor\t: 0\nFeatures\t: fp asimd aes\n", 1024, "fp asimd aes"},
		{"unknown", "MemFree: 3 kB\n", "processor\t: 0\n", 0, ""},
		{"garbage", "MemAvailable: lots\n", "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := memAvailable(write("meminfo", tt.meminfo)); got != tt.mem {
				t.Errorf("memAvailable = %d, want %d", got, tt.mem)
			}
			if got := cpuFlags(write("cpuinfo", tt.cpuinfo)); got != tt.flags {
				t.Errorf("cpuFlags = %q, want %q", got, tt.flags)
			}
		})
	}
	if memAvailable(filepath.Join(dir, "none")) != 0 || cpuFlags(filepath.Join(dir, "none")) != "" {
		t.Error("a missing file gave facts")
	}
}
