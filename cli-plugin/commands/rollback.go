package commands

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

type rollbackOptions struct {
	force  bool
	format string
}

func newRollbackCommand(dockerCli command.Cli, svc migrate.Service) *cobra.Command {
	var opts rollbackOptions
	cmd := &cobra.Command{
		Use: "rollback CONTAINER",
		Example: `  # On the source: undo a move of web that did not finish
  docker migrate rollback web`,
		Short: "Undo a move that did not finish, on the context it came from",
		Long: `Undo a move that did not finish: a killed docker migrate, a dropped ssh
session, a rebooted host. Run it on the context the container came from.

The source comes first: its volumes are released, its restart policy is
put back and the container starts again if it was running. Then what the
move made on the target is removed; if the target cannot be reached, the
commands that remove it later are shown. A container that already runs on
the target is left alone unless --force is given.`,
		Args: cli.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRollback(cmd.Context(), dockerCli, svc, args[0], opts)
		},
	}
	flags := cmd.Flags()
	flags.BoolVar(&opts.force, "force", false, "Roll back even if the container may run on the target (it is stopped there first; what it wrote there is lost)")
	flags.StringVarP(&opts.format, "format", "f", "", resultFormatHelp)
	cmd.ValidArgsFunction = completeContainers(dockerCli, false)
	return cmd
}

func runRollback(ctx context.Context, dockerCli command.Cli, svc migrate.Service, name string, opts rollbackOptions) error {
	format, err := parseFormat(opts.format)
	if err != nil {
		return err
	}
	// A rollback runs to its end: each of its steps has its own deadline.
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := svc.Rollback(ctx, name, migrate.RollbackOptions{Force: opts.force})
	if err != nil {
		return err
	}
	if format.isTable() {
		for _, w := range res.Warnings {
			fmt.Fprintln(dockerCli.Err(), "warning:", w)
		}
	}
	return printItem(dockerCli.Out(), format, res, printRollbackResult)
}

// printRollbackResult tells what the rollback did.
func printRollbackResult(out io.Writer, res *migrate.RollbackResult) error {
	for _, r := range res.Released {
		fmt.Fprintf(out, "Released export %s on %s.\n", r, res.Source)
	}
	for _, r := range res.Removed {
		fmt.Fprintf(out, "Removed %s on %s.\n", r, res.Target)
	}
	if res.Restarted {
		fmt.Fprintf(out, "%s runs on %s again.\n", res.Container, res.Source)
	} else {
		fmt.Fprintf(out, "%s is back on %s, stopped as it was.\n", res.Container, res.Source)
	}
	return nil
}
