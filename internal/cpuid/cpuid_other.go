//go:build !amd64

package cpuid

func readXSave() (XSave, bool) { return XSave{}, false }
