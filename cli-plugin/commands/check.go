package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/command/formatter"
	"github.com/docker/cli/templates"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/dockerctx"
	"github.com/cargo-migrate/cargo/internal/migrate"
)

type checkOptions struct {
	to             string
	skipBindMounts bool
	force          bool
	format         string
}

func newCheckCmd(dockerCli command.Cli) *cobra.Command {
	var opts checkOptions
	cmd := &cobra.Command{
		Use:   "check CONTAINER --to CONTEXT",
		Short: "Check that a container can move to another Docker context, changing nothing",
		Args:  cli.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCheck(cmd.Context(), dockerCli, args[0], opts)
		},
	}
	flags := cmd.Flags()
	flags.StringVar(&opts.to, "to", "", "Docker context to move the container to (required)")
	flags.BoolVar(&opts.skipBindMounts, "skip-bind-mounts", false, "Accept that bind mounts stay behind")
	flags.BoolVar(&opts.force, "force", false, "Report the checks that can safely be skipped as skipped")
	flags.StringVarP(&opts.format, "format", "f", "", "Format output: 'json', or a Go template")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// endpoints resolves the source (the current context) and the target.
func endpoints(dockerCli command.Cli, to string) (src, dst migrate.Endpoint, err error) {
	src = migrate.Endpoint{Context: dockerCli.CurrentContext(), API: dockerCli.Client()}
	if to == src.Context {
		return src, dst, fmt.Errorf("--to %s is the current context: choose another one (see `docker context ls`)", to)
	}
	api, err := dockerctx.Client(dockerCli, to)
	if err != nil {
		return src, dst, err
	}
	return src, migrate.Endpoint{Context: to, API: api}, nil
}

func runCheck(ctx context.Context, dockerCli command.Cli, name string, opts checkOptions) error {
	src, dst, err := endpoints(dockerCli, opts.to)
	if err != nil {
		return err
	}
	r, err := migrate.CheckMove(ctx, src.Side(), dst.Side(), name, migrate.Options{SkipBindMounts: opts.skipBindMounts, Force: opts.force})
	if err != nil {
		return err
	}
	if err := printReport(dockerCli.Out(), r, opts.format); err != nil {
		return err
	}
	if failed := r.Failed(); len(failed) > 0 {
		return fmt.Errorf("%s cannot move to %s: %d check(s) failed", r.Container, r.Target, len(failed))
	}
	return nil
}

func printReport(w io.Writer, r *migrate.Report, format string) error {
	switch format {
	case "":
	case formatter.JSONFormatKey:
		enc := json.NewEncoder(w)
		return enc.Encode(r)
	default:
		tmpl, err := templates.Parse(format)
		if err != nil {
			return fmt.Errorf("template parsing error: %w", err)
		}
		if err := tmpl.Execute(w, r); err != nil {
			return err
		}
		_, err = fmt.Fprintln(w)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintf(tw, "CHECK\tRESULT\tDETAIL\n")
	for _, c := range r.Checks {
		res := "ok"
		switch {
		case c.Skipped:
			res = "skipped"
		case !c.OK:
			res = "FAILED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, res, c.Detail)
	}
	if len(r.Mounts) > 0 {
		fmt.Fprintf(tw, "\nMOUNT\tACTION\tSOURCE\n")
		for _, m := range r.Mounts {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Destination, m.Action, mountSource(m))
		}
	}
	return tw.Flush()
}

func mountSource(m migrate.MountPlan) string {
	switch {
	case m.Name != "":
		return fmt.Sprintf("%s %s (%s)", m.Type, m.Name, m.Driver)
	case m.Source != "":
		return fmt.Sprintf("%s %s", m.Type, m.Source)
	}
	return m.Type
}
