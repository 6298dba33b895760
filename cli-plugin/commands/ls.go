package commands

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/dockerctx"
	"github.com/cargo-migrate/cargo/internal/migrate"
)

// lsTimeout bounds each host: an unreachable one (an ssh context to a
// machine that is down) must not hold up the others' listing.
const lsTimeout = 10 * time.Second

func newLsCmd(dockerCli command.Cli) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List the containers of every docker context and where they moved",
		Args:    cli.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLs(cmd.Context(), dockerCli, format)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Format output: 'table', 'json', or a Go template applied to each row")
	return cmd
}

func runLs(ctx context.Context, dockerCli command.Cli, format string) error {
	// A bad template is refused before any host is asked.
	if _, err := rowTemplate(format); err != nil {
		return err
	}
	metas, err := dockerCli.ContextStore().List()
	if err != nil {
		return fmt.Errorf("listing docker contexts: %w", err)
	}
	current := dockerCli.CurrentContext()
	names := []string{}
	for _, m := range metas {
		names = append(names, m.Name)
	}
	// Like `docker context ls`: the current context is listed even when
	// the store lacks it (it then shows as unreachable).
	if !slices.Contains(names, current) {
		names = append(names, current)
	}
	var (
		mu     sync.Mutex
		opened []client.APIClient
	)
	hosts := make([]migrate.Host, 0, len(names))
	for _, n := range names {
		hosts = append(hosts, migrate.Host{Context: n, Current: n == current, Connect: func() (migrate.Lister, error) {
			api, err := dockerctx.Client(dockerCli, n)
			if err != nil {
				return nil, err
			}
			// The CLI's own client is the CLI's to close.
			if n != current {
				mu.Lock()
				opened = append(opened, api)
				mu.Unlock()
			}
			return api, nil
		}})
	}
	rows := migrate.ListHosts(ctx, hosts, lsTimeout)
	for _, api := range opened {
		_ = api.Close()
	}
	return printContainers(dockerCli.Out(), rows, format)
}

func printContainers(w io.Writer, rows []migrate.ContainerRow, format string) error {
	if done, err := printRows(w, rows, format); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTEXT\tCONTAINER\tIMAGE\tSTATUS\tMIGRATION\tDETAIL")
	for _, r := range rows {
		name := r.Context
		if r.Current {
			name += " *"
		}
		status := r.Status
		if r.State == migrate.StateUnreachable {
			status = r.State
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, dash(r.Container), dash(r.Image), dash(status), migrationText(r), r.Error)
	}
	return tw.Flush()
}

// migrationText is the MIGRATION column: where the container went or
// came from, and how far its copy is.
func migrationText(r migrate.ContainerRow) string {
	switch r.Migration {
	case migrate.MigrationMovedOut:
		if r.Progress != "" {
			return "moved out to " + r.To + " (" + r.Progress + ")"
		}
		return "moved out to " + r.To
	case migrate.MigrationMovedIn:
		return fmt.Sprintf("moved in from %s (%s)", r.From, r.Progress)
	}
	return dash(r.Migration)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
