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
	var opts moveOptions
	cmd := &cobra.Command{
		Use:   "migrate [CONTAINER --to CONTEXT]",
		Short: "Move containers between Docker hosts with lazily copied volumes",
		Long: `Move containers between Docker hosts (docker contexts).

A moved container runs on the target at once; its cargo volumes are
federated there and copied in the background from the source host.
"docker migrate check CONTAINER --to CONTEXT" tells whether a container can
move, changing nothing.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return runMove(cmd.Context(), dockerCli, args[0], opts)
		},
	}
	flags := cmd.Flags()
	flags.StringVar(&opts.to, "to", "", "Docker context to move the container to")
	flags.BoolVar(&opts.skipBindMounts, "skip-bind-mounts", false, "Start the container on the target without its bind mounts")
	flags.BoolVar(&opts.force, "force", false, "Go on past the checks that can safely be skipped (free ports and disk, local volumes shared)")
	flags.StringVarP(&opts.format, "format", "f", "", "Format the result: 'json'")
	flags.StringVar(&opts.progress, "progress", "auto", "Set type of progress output: 'auto', 'plain', 'tty', 'quiet' or 'json'")
	flags.StringVar(&opts.hooks.PreRestore, "hook-pre-restore", "", "Shell command run before the container is created on the target; its failure rolls the move back")
	flags.StringVar(&opts.hooks.PostRestore, "hook-post-restore", "", "Shell command run after the container started on the target; its failure is a warning")
	flags.StringVar(&opts.hooks.FailedRestore, "hook-failed-restore", "", "Shell command run when the move is rolled back")
	cmd.AddCommand(
		newCheckCmd(dockerCli),
		newFailoverCmd(dockerCli),
		newLsCmd(dockerCli),
		newStatusCmd(dockerCli),
		newVersionCmd(dockerCli),
	)
	return cmd
}
