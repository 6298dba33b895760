package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/command/formatter"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/dockerctx"
	"github.com/cargo-migrate/cargo/internal/migrate"
)

type failoverOptions struct {
	wait, removeSource bool
	format             string
}

func newFailoverCmd(dockerCli command.Cli) *cobra.Command {
	var opts failoverOptions
	cmd := &cobra.Command{
		Use:   "failover CONTAINER",
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
			return runFailover(cmd.Context(), dockerCli, args[0], opts)
		},
	}
	flags := cmd.Flags()
	flags.BoolVarP(&opts.wait, "wait", "w", false, "Wait for the copy to complete, showing its progress")
	flags.BoolVar(&opts.removeSource, "remove-source", false, "Remove the stopped source container and its volumes")
	flags.StringVarP(&opts.format, "format", "f", "", "Format the result: 'json'")
	return cmd
}

func runFailover(ctx context.Context, dockerCli command.Cli, name string, opts failoverOptions) error {
	if opts.format != "" && opts.format != formatter.JSONFormatKey {
		return fmt.Errorf("--format takes json")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	resolve := func(name string) (client.APIClient, error) { return dockerctx.Client(dockerCli, name) }
	out := dockerCli.Out()
	var w watcher
	var waiting func([]migrate.VolumeStatus)
	if opts.wait && opts.format == "" {
		w = &plainWatch{w: out, last: map[string]string{}}
		if out.IsTerminal() {
			w = &ttyWatch{out: out}
		}
		waiting = w.draw
	}
	res, err := migrate.Failover(ctx, dockerCli.Client(), resolve, name, migrate.FailoverOptions{Wait: opts.wait, RemoveSource: opts.removeSource}, waiting)
	if w != nil {
		w.end()
	}
	if err != nil {
		return err
	}
	if opts.format == formatter.JSONFormatKey {
		return json.NewEncoder(out).Encode(res)
	}
	for _, warn := range res.Warnings {
		fmt.Fprintln(dockerCli.Err(), "warning:", warn)
	}
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
