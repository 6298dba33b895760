// Command docker-migrate is the `docker migrate` CLI plugin.
package main

import (
	"github.com/docker/cli/cli-plugins/metadata"
	"github.com/docker/cli/cli-plugins/plugin"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/cli-plugin/commands"
	"github.com/cargo-migrate/cargo/internal/version"
)

func main() {
	plugin.Run(func(dockerCli command.Cli) *cobra.Command {
		return commands.NewRootCmd(dockerCli)
	}, metadata.Metadata{
		SchemaVersion:    "0.1.0",
		Vendor:           "cargo",
		Version:          version.Version,
		ShortDescription: "Move containers between Docker hosts with lazily copied volumes",
		URL:              "https://github.com/cargo-migrate/cargo",
	})
}
