package commands

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

type moveOptions struct {
	to             string
	skipBindMounts bool
	force          bool
	live           bool
	format         string
	progress       string
	hooks          migrate.Hooks
}

// newMoveCommand is `docker migrate CONTAINER --to CONTEXT`. It is the
// root command, so its Use is the plugin's name, which the docker CLI
// dispatches on.
func newMoveCommand(dockerCli command.Cli, svc migrate.Service) *cobra.Command {
	var opts moveOptions
	cmd := &cobra.Command{
		Use: "migrate [CONTAINER --to CONTEXT]",
		Example: `  # Move web to host2: it runs there at once, its volumes copy behind it
  docker migrate web --to host2

  # Carry its running processes too (CRIU checkpoint and restore)
  docker migrate web --to host2 --live

  # The result as one JSON object
  docker migrate web --to host2 --format json`,
		Short: "Move containers between Docker hosts with lazily copied volumes",
		Long: `Move containers between Docker hosts (docker contexts).

A moved container runs on the target at once; its cargo volumes are
federated there and copied in the background from the source host.
"docker migrate check CONTAINER --to CONTEXT" tells whether a container can
move, changing nothing.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return runMove(cmd.Context(), dockerCli, svc, args[0], opts)
		},
	}
	flags := cmd.Flags()
	flags.StringVar(&opts.to, "to", "", "Docker context to move the container to")
	flags.BoolVar(&opts.skipBindMounts, "skip-bind-mounts", false, "Start the container on the target without its bind mounts")
	flags.BoolVar(&opts.force, "force", false, "Go on past the checks that can safely be skipped (free ports and disk, local volumes shared)")
	flags.BoolVar(&opts.live, "live", false, "Move the running processes too: checkpoint them with CRIU and restore them on the target")
	flags.StringVarP(&opts.format, "format", "f", "", resultFormatHelp)
	flags.StringVar(&opts.progress, "progress", "auto", "Set type of progress output: 'auto', 'plain', 'tty', 'quiet' or 'json'")
	flags.StringVar(&opts.hooks.PreRestore, "hook-pre-restore", "", "Shell command run before the container is created on the target; its failure rolls the move back")
	flags.StringVar(&opts.hooks.PostRestore, "hook-post-restore", "", "Shell command run after the container started on the target; its failure is a warning")
	flags.StringVar(&opts.hooks.FailedRestore, "hook-failed-restore", "", "Shell command run when the move is rolled back")
	cmd.ValidArgsFunction = completeContainers(dockerCli, false)
	_ = cmd.RegisterFlagCompletionFunc("to", completeTargets(dockerCli))
	return cmd
}

func runMove(ctx context.Context, dockerCli command.Cli, svc migrate.Service, name string, opts moveOptions) error {
	if opts.to == "" {
		return fmt.Errorf(`required flag "to" not set: docker migrate %s --to CONTEXT`, name)
	}
	format, err := parseFormat(opts.format)
	if err != nil {
		return err
	}
	mode, err := resolveProgress(opts.progress, dockerCli.Out().IsTerminal())
	if err != nil {
		return err
	}
	// The progress goes to stdout, unless it would mix with a formatted
	// result there: then only --progress json shows, on stderr.
	var progressOut io.Writer = dockerCli.Out()
	if !format.isTable() {
		progressOut = dockerCli.Err()
		if mode != progressJSON {
			mode = progressQuiet
		}
	}
	if mode == progressQuiet {
		// Where notices, warnings among them, still go.
		progressOut = dockerCli.Err()
	}
	// Ctrl-C, a kill or a dropped ssh session (SIGHUP) rolls the move
	// back rather than leaving it half done; after SIGKILL, the record
	// on the source lets a new run finish it or `rollback` undo it.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	progress, err := newProgress(mode, progressOut, false)
	if err != nil {
		return err
	}
	res, err := svc.Move(ctx, name, migrate.MoveOptions{
		CheckOptions: migrate.CheckOptions{To: opts.to, SkipBindMounts: opts.skipBindMounts, Force: opts.force, Live: opts.live},
		Hooks:        opts.hooks, HookOutput: progress, Progress: progress,
	})
	// A live display ends before anything else is printed, the error too.
	progress.Close()
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(dockerCli.Err(), "warning:", w)
	}
	// With --progress json, stdout is JSON lines: the result is the last.
	if mode == progressJSON && format.isTable() {
		format = outputFormat{json: true}
	}
	return printItem(dockerCli.Out(), format, res, printMoveResult)
}

// printMoveResult tells where the container runs now and how its volumes
// follow.
func printMoveResult(out io.Writer, res *migrate.Result) error {
	switch {
	case res.Live:
		fmt.Fprintf(out, "%s runs on %s, its processes restored from a checkpoint; downtime %s.\n", res.Container, res.Target, res.Downtime.Round(time.Millisecond))
	case res.Running:
		fmt.Fprintf(out, "%s runs on %s; downtime %s.\n", res.Container, res.Target, res.Downtime.Round(time.Millisecond))
	default:
		fmt.Fprintf(out, "%s is on %s, stopped as it was on %s.\n", res.Container, res.Target, res.Source)
	}
	for _, v := range res.Volumes {
		fmt.Fprintf(out, "Volume %s is copied in the background: docker --context %s volume inspect -f '{{json .Status}}' %s\n", v, res.Target, v)
	}
	return nil
}
