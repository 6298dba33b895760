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
		Use: "ls [OPTIONS]",
		Example: `  # Every context's containers and where they moved
  docker migrate ls

  # One line per container, from a Go template
  docker migrate ls --format '{{.Context}} {{.Container}} {{.Migration}} {{.Progress}}'`,
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
// context marked with a *. It fits 80 columns: what does not (why a
// context is unreachable, a copy's error, how to finish a move) goes in
// notes under the table, one per line.
func printContainers(w io.Writer, rows []migrate.ContainerRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTEXT\tCONTAINER\tIMAGE\tSTATE\tMIGRATION")
	var notes []string
	for _, r := range rows {
		name := r.Context
		if r.Current {
			name += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, dash(r.Container), dash(r.Image), dash(r.State), migrationText(r))
		var why []string
		if r.Migration == migrate.MigrationInterrupted {
			why = append(why, "the move was interrupted "+r.Progress)
		}
		for _, s := range []string{r.Error, r.Next} {
			if s != "" {
				why = append(why, s)
			}
		}
		if len(why) > 0 {
			about := r.Context
			if r.Container != "" {
				about = r.Container + " on " + r.Context
			}
			notes = append(notes, about+": "+strings.Join(why, "; "))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	return nil
}

// migrationText is the MIGRATION column: where the container moved to
// (on the source) or from (on the target), and how far its copy is.
func migrationText(r migrate.ContainerRow) string {
	switch r.Migration {
	case migrate.MigrationMovedOut:
		if r.Progress != "" {
			return "to " + r.To + " (" + r.Progress + ")"
		}
		return "to " + r.To
	case migrate.MigrationMovedIn:
		return fmt.Sprintf("from %s (%s)", strings.ReplaceAll(r.From, defaultPeerPort, ""), r.Progress)
	case migrate.MigrationInterrupted:
		return fmt.Sprintf("interrupted (to %s)", r.To)
	}
	return dash(r.Migration)
}

// defaultPeerPort is left out of source addresses, for room.
const defaultPeerPort = ":7450"

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
