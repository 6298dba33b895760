// Package cpuid reads what the CPU says of its extended state (XSAVE):
// which state components it saves and how large the save area is. CRIU
// restores a process's FPU and vector registers from a save area of the
// source's layout, so a target must know every component the source
// saves, with a save area of the same size; /proc/cpuinfo does not say
// the sizes.
package cpuid

// XSave is the CPU's extended state, as CPUID leaf 0xD reports it.
type XSave struct {
	// Features is the mask of state components the CPU can save.
	Features uint64
	// Size is the save area's size for the components enabled now;
	// MaxSize for every component the CPU supports.
	Size, MaxSize uint32
}

// ReadXSave returns the CPU's extended state; ok is false where the CPU
// (or this architecture) has no XSAVE.
func ReadXSave() (x XSave, ok bool) {
	return readXSave()
}
