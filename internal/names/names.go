// Package names validates the names users give to volumes, the same way the
// Docker engine validates names for its own local volumes.
package names

import (
	"fmt"
	"regexp"
)

// maxLen keeps a name usable as one path component on every filesystem.
const maxLen = 255

var validVolumeName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// ValidateVolume returns an error that tells the user what a valid name is.
func ValidateVolume(name string) error {
	if name == "" {
		return fmt.Errorf("volume name is empty")
	}
	if len(name) > maxLen {
		return fmt.Errorf("volume name %q is too long (%d characters, at most %d)", name, len(name), maxLen)
	}
	if !validVolumeName.MatchString(name) {
		return fmt.Errorf("invalid volume name %q: a name must be at least 2 characters of [a-zA-Z0-9_.-], starting with a letter or digit (no \"/\", spaces or other characters)", name)
	}
	return nil
}
