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
}

// runMove is `docker migrate CONTAINER --to CONTEXT`.
func runMove(ctx context.Context, dockerCli command.Cli, name string, opts moveOptions) error {
	if opts.to == "" {
		return fmt.Errorf(`required flag "to" not set: docker migrate %s --to CONTEXT`, name)
	}
	if opts.format != "" && opts.format != formatter.JSONFormatKey {
		return fmt.Errorf("--format takes json")
	}
	src, dst, err := endpoints(dockerCli, opts.to)
	if err != nil {
		return err
	}
	// Ctrl-C rolls the move back rather than leaving it half done.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	out := dockerCli.Out()
	var progress migrate.Progress
	if opts.format == "" {
		progress = plainProgress{out}
	}
	res, err := migrate.Move(ctx, src, dst, name, migrate.Options{SkipBindMounts: opts.skipBindMounts}, progress)
	if err != nil {
		return err
	}
	if opts.format == formatter.JSONFormatKey {
		return json.NewEncoder(out).Encode(res)
	}
	fmt.Fprintf(out, "%s runs on %s; downtime %s.\n", res.Container, res.Target, res.Downtime.Round(time.Millisecond))
	for _, v := range res.Volumes {
		fmt.Fprintf(out, "Volume %s is copied in the background: docker --context %s volume inspect -f '{{json .Status}}' %s\n", v, res.Target, v)
	}
	return nil
}

// plainProgress prints a line as each phase ends.
type plainProgress struct{ w io.Writer }

func (plainProgress) PhaseStarted(string) {}

func (p plainProgress) PhaseDone(ph migrate.Phase) {
	fmt.Fprintf(p.w, "%-8s %7s  %s\n", ph.Name, ph.Duration.Round(time.Millisecond), ph.Detail)
}
