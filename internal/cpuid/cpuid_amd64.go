package cpuid

// cpuid runs the CPUID instruction for leaf and subleaf.
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

func readXSave() (XSave, bool) {
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 0xd {
		return XSave{}, false
	}
	if _, _, ecx, _ := cpuid(1, 0); ecx&(1<<26) == 0 {
		return XSave{}, false // no XSAVE
	}
	eax, ebx, ecx, edx := cpuid(0xd, 0)
	return XSave{Features: uint64(edx)<<32 | uint64(eax), Size: ebx, MaxSize: ecx}, true
}
