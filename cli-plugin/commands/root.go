// Package commands holds the `docker migrate` command tree, one file per
// command; what several commands share has a file of its own (format.go,
// watch.go).
package commands

import (
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/dockerctx"
	"github.com/cargo-migrate/cargo/internal/migrate"
)

// NewRootCmd returns the `docker migrate` command. The root itself moves
// a container (move.go); the other operations are its subcommands.
func NewRootCmd(dockerCli command.Cli) *cobra.Command {
	// The CLI is initialized only once the command runs: the service asks
	// it for contexts and clients then.
	svc := migrate.NewService(dockerctx.New(dockerCli))
	cmd := newMoveCommand(dockerCli, svc)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	cmd.AddCommand(
		newCheckCommand(dockerCli, svc),
		newDrainCommand(dockerCli, svc),
		newFailoverCommand(dockerCli, svc),
		newLsCommand(dockerCli, svc),
		newRollbackCommand(dockerCli, svc),
		newStatusCommand(dockerCli, svc),
		newVersionCommand(dockerCli),
	)
	return cmd
}
