package cpuid

import (
	"bufio"
	"os"
	"runtime"
	"strings"
	"testing"
)

// What CPUID says agrees with what the kernel says of the same CPU.
func TestReadXSaveAgreesWithTheKernel(t *testing.T) {
	x, ok := ReadXSave()
	hasXSave := cpuinfoHas(t, "xsave")
	if runtime.GOARCH != "amd64" {
		if ok {
			t.Fatalf("XSAVE read on %s: %+v", runtime.GOARCH, x)
		}
		return
	}
	if ok != hasXSave {
		t.Fatalf("ReadXSave ok = %v, /proc/cpuinfo has xsave: %v", ok, hasXSave)
	}
	if !ok {
		return
	}
	// x87 and SSE state are always there; the legacy area and header
	// alone take 576 bytes.
	if x.Features&3 != 3 || x.Size < 576 || x.MaxSize < x.Size {
		t.Fatalf("implausible XSAVE facts: %+v", x)
	}
	if cpuinfoHas(t, "avx") && x.Features&4 == 0 {
		t.Fatalf("the kernel reports avx but XSAVE has no AVX state: %#x", x.Features)
	}
}

func cpuinfoHas(t *testing.T, flag string) bool {
	t.Helper()
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "flags"); ok {
			for _, fl := range strings.Fields(strings.TrimLeft(rest, "\t :")) {
				if fl == flag {
					return true
				}
			}
			return false
		}
	}
	return false
}
