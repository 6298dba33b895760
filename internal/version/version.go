// Package version holds the build's version, set by the Makefile through -ldflags.
package version

var (
	// Version is the release version, e.g. v0.1.0, or a git describe string.
	Version = "v0.0.0-dev"
	// Revision is the git commit the binaries were built from.
	Revision = "unknown"
)
