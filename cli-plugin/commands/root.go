// Package commands holds the `docker migrate` command tree, one file per
// command.
package commands

import (
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"
)

// NewRootCmd returns the `docker migrate` command. Its Use must be the
// plugin's name for the docker CLI to dispatch to it.
func NewRootCmd(dockerCli command.Cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Move containers between Docker hosts with lazily copied volumes",
		Long: `Move containers between Docker hosts (docker contexts).

A moved container runs on the target at once; its cargo volumes are
federated there and copied in the background from the source host.
"docker migrate check" tells whether a container can move; the move itself
("docker migrate CONTAINER --to CONTEXT") is being built.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(
		newCheckCmd(dockerCli),
		newVersionCmd(dockerCli),
	)
	return cmd
}
