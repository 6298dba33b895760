package commands

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every command's --help shows an example of it.
func TestEveryCommandHasAnExample(t *testing.T) {
	root := NewRootCmd(nil)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !strings.Contains(c.Example, "docker ") || !strings.Contains(c.Example, "migrate") {
			t.Errorf("%q has no example of itself: %q", c.CommandPath(), c.Example)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
