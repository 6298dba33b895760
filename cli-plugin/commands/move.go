package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/docker/cli/cli/command/formatter"

	"github.com/cargo-migrate/cargo/internal/migrate"
)

type moveOptions struct {
	to             string
	skipBindMounts bool
	format         string
	progress       string
	hooks          migrate.Hooks
	force          bool
}

// runMove is `docker migrate CONTAINER --to CONTEXT`.
func runMove(ctx context.Context, dockerCli command.Cli, name string, opts moveOptions) error {
	if opts.to == "" {
		return fmt.Errorf(`required flag "to" not set: docker migrate %s --to CONTEXT`, name)
	}
	if opts.format != "" && opts.format != formatter.JSONFormatKey {
		return fmt.Errorf("--format takes json")
	}
	mode, err := resolveProgress(opts.progress, dockerCli.Out().IsTerminal())
	if err != nil {
		return err
	}
	// The progress goes to stdout, unless it would mix with the JSON
	// result there: then only --progress json shows, on stderr.
	var progressOut io.Writer = dockerCli.Out()
	if opts.format == formatter.JSONFormatKey {
		progressOut = dockerCli.Err()
		if mode != progressJSON {
			mode = progressQuiet
		}
	}
	if mode == progressQuiet {
		// Where notices, warnings among them, still go.
		progressOut = dockerCli.Err()
	}
	src, dst, err := endpoints(dockerCli, opts.to)
	if err != nil {
		return err
	}
	// Ctrl-C rolls the move back rather than leaving it half done.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	progress, err := newProgress(mode, progressOut, false)
	if err != nil {
		return err
	}
	res, err := migrate.Move(ctx, src, dst, name, migrate.Options{SkipBindMounts: opts.skipBindMounts, Force: opts.force,
		Hooks: opts.hooks, HookOutput: progress}, progress)
	// A live display ends before anything else is printed, the error too.
	progress.Close()
	if err != nil {
		return err
	}
	out := dockerCli.Out()
	for _, w := range res.Warnings {
		fmt.Fprintln(dockerCli.Err(), "warning:", w)
	}
	// With --progress json, stdout is JSON lines: the result is the last.
	if opts.format == formatter.JSONFormatKey || mode == progressJSON {
		return json.NewEncoder(out).Encode(res)
	}
	if res.Running {
		fmt.Fprintf(out, "%s runs on %s; downtime %s.\n", res.Container, res.Target, res.Downtime.Round(time.Millisecond))
	} else {
		fmt.Fprintf(out, "%s is on %s, stopped as it was on %s.\n", res.Container, res.Target, res.Source)
	}
	for _, v := range res.Volumes {
		fmt.Fprintf(out, "Volume %s is copied in the background: docker --context %s volume inspect -f '{{json .Status}}' %s\n", v, res.Target, v)
	}
	return nil
}
