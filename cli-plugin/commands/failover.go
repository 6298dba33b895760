package commands

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

type failoverOptions struct {
	wait, removeSource bool
	format             string
}

func newFailoverCommand(dockerCli command.Cli, svc migrate.Service) *cobra.Command {
	var opts failoverOptions
	cmd := &cobra.Command{
		Use: "failover CONTAINER",
		Example: `  # On the target, once the copy is complete: release the source host
  docker --context host2 migrate failover web

  # Wait for the copy, then remove the stopped source container too
  docker --context host2 migrate failover web --wait --remove-source`,
		Short: "End a moved container's dependence on the host it came from",
		Long: `End a moved container's dependence on the host it came from.

Run it on the context the container moved to, once "docker migrate status"
shows its volumes complete (or with --wait). The container restarts for a
moment so its volumes become plain local ones, and the source host's
exports are released. With --remove-source the stopped source container and
its volumes are removed too. Afterwards the container runs on without the
source host, even if that host is gone for good.`,
		Args: cli.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFailover(cmd.Context(), dockerCli, svc, args[0], opts)
		},
	}
	flags := cmd.Flags()
	flags.BoolVarP(&opts.wait, "wait", "w", false, "Wait for the copy to complete, showing its progress")
	flags.BoolVar(&opts.removeSource, "remove-source", false, "Remove the stopped source container and its volumes")
	flags.StringVarP(&opts.format, "format", "f", "", resultFormatHelp)
	cmd.ValidArgsFunction = completeContainers(dockerCli, false)
	return cmd
}

func runFailover(ctx context.Context, dockerCli command.Cli, svc migrate.Service, name string, opts failoverOptions) error {
	format, err := parseFormat(opts.format)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := dockerCli.Out()
	fo := migrate.FailoverOptions{Wait: opts.wait, RemoveSource: opts.removeSource}
	var w watcher
	// The wait's progress would mix with a formatted result.
	if opts.wait && format.isTable() {
		w = newWatcher(out)
		fo.Waiting = w.draw
	}
	res, err := svc.Failover(ctx, name, fo)
	if w != nil {
		w.end()
	}
	if err != nil {
		return err
	}
	if format.isTable() {
		// A formatted result carries them.
		for _, warn := range res.Warnings {
			fmt.Fprintln(dockerCli.Err(), "warning:", warn)
		}
	}
	return printItem(out, format, res, printFailoverResult)
}

// printFailoverResult tells what the failover did.
func printFailoverResult(out io.Writer, res *migrate.FailoverResult) error {
	if res.Restarted {
		fmt.Fprintf(out, "Restarted %s: its volumes are local now.\n", res.Container)
	}
	for _, r := range res.Released {
		fmt.Fprintf(out, "Released export %s.\n", r)
	}
	if res.RemovedSource {
		fmt.Fprintf(out, "Removed the source container and its volumes.\n")
	}
	fmt.Fprintf(out, "%s no longer depends on the host it moved from.\n", res.Container)
	return nil
}
