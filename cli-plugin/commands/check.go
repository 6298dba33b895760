package commands

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

type checkOptions struct {
	to             string
	skipBindMounts bool
	force          bool
	live           bool
	format         string
}

func newCheckCommand(dockerCli command.Cli, svc migrate.Service) *cobra.Command {
	var opts checkOptions
	cmd := &cobra.Command{
		Use: "check CONTAINER --to CONTEXT",
		Example: `  # Can web move to host2? Nothing changes
  docker migrate check web --to host2

  # Can it move with its running processes?
  docker migrate check web --to host2 --live`,
		Short: "Check that a container can move to another Docker context, changing nothing",
		Args:  cli.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCheck(cmd.Context(), dockerCli, svc, args[0], opts)
		},
	}
	flags := cmd.Flags()
	flags.StringVar(&opts.to, "to", "", "Docker context to move the container to (required)")
	flags.BoolVar(&opts.skipBindMounts, "skip-bind-mounts", false, "Accept that bind mounts stay behind")
	flags.BoolVar(&opts.force, "force", false, "Report the checks that can safely be skipped as skipped")
	flags.BoolVar(&opts.live, "live", false, "Also check what a live move needs (checkpoints on both engines, CPU, memory, what CRIU cannot carry)")
	flags.StringVarP(&opts.format, "format", "f", "", formatHelp)
	_ = cmd.MarkFlagRequired("to")
	cmd.ValidArgsFunction = completeContainers(dockerCli, false)
	_ = cmd.RegisterFlagCompletionFunc("to", completeTargets(dockerCli))
	return cmd
}

func runCheck(ctx context.Context, dockerCli command.Cli, svc migrate.Service, name string, opts checkOptions) error {
	format, err := parseFormat(opts.format)
	if err != nil {
		return err
	}
	r, err := svc.Check(ctx, name, migrate.CheckOptions{To: opts.to, SkipBindMounts: opts.skipBindMounts, Force: opts.force, Live: opts.live})
	if err != nil {
		return err
	}
	if err := printItem(dockerCli.Out(), format, r, printReport); err != nil {
		return err
	}
	if failed := r.Failed(); len(failed) > 0 {
		return fmt.Errorf("%s cannot move to %s: %d check(s) failed", r.Container, r.Target, len(failed))
	}
	return nil
}

// printReport is the table of the checks and of what happens to each
// mount.
func printReport(w io.Writer, r *migrate.Report) error {
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
