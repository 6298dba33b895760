package commands

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

type lsOptions struct {
	format string
}

func newLsCommand(dockerCli command.Cli, svc migrate.Service) *cobra.Command {
	var opts lsOptions
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List the containers of every docker context and where they moved",
		Args:    cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLs(cmd.Context(), dockerCli, svc, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.format, "format", "f", "", listFormatHelp)
	return cmd
}

func runLs(ctx context.Context, dockerCli command.Cli, svc migrate.Service, opts lsOptions) error {
	// A bad template is refused before any host is asked.
	format, err := parseFormat(opts.format)
	if err != nil {
		return err
	}
	rows, err := svc.Ls(ctx, migrate.LsOptions{})
	if err != nil {
		return err
	}
	return printItems(dockerCli.Out(), format, rows, printContainers)
}

// printContainers is the table of ls: a row per container, the current
// context marked with a *.
func printContainers(w io.Writer, rows []migrate.ContainerRow) error {
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
		detail := r.Error
		if r.Next != "" {
			detail = strings.TrimPrefix(detail+"; "+r.Next, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, dash(r.Container), dash(r.Image), dash(status), migrationText(r), detail)
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
	case migrate.MigrationInterrupted:
		return fmt.Sprintf("move to %s interrupted (%s)", r.To, r.Progress)
	}
	return dash(r.Migration)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
