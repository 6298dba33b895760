package migrate

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Hooks are shell command lines run on this host around the restore on
// the target, as in cmt. An empty one is not run.
type Hooks struct {
	// PreRestore runs once the volumes are ready, before the container is
	// created on the target; its failure rolls the move back.
	PreRestore string
	// PostRestore runs once the container started on the target; its
	// failure is only a warning.
	PostRestore string
	// FailedRestore runs when a move is rolled back.
	FailedRestore string
}

// The hooks' names, as CARGO_HOOK and the errors give them.
const (
	HookPreRestore    = "pre-restore"
	HookPostRestore   = "post-restore"
	HookFailedRestore = "failed-restore"
)

// HookEnv is what a hook learns of the move, from its environment.
type HookEnv struct {
	Container   string // CARGO_CONTAINER: the container's name
	ContainerID string // CARGO_CONTAINER_ID: its ID on the source
	Source      string // CARGO_SOURCE: the source docker context
	Target      string // CARGO_TARGET: the target docker context
	Error       string // CARGO_ERROR: why the move failed, for failed-restore
}

// hookWaitDelay bounds the wait for a killed hook's output: a process it
// started in a new session may hold the pipe open.
const hookWaitDelay = 5 * time.Second

// runHook runs hook which ("pre-restore", ...) as `/bin/sh -c command`,
// with the environment of this process plus env's CARGO_ variables, its
// stdout and stderr going to out. Cancelling ctx kills it and what it
// started. An empty command does nothing.
func runHook(ctx context.Context, which, command string, env HookEnv, out io.Writer) error {
	if command == "" {
		return nil
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(),
		"CARGO_HOOK="+which,
		"CARGO_CONTAINER="+env.Container,
		"CARGO_CONTAINER_ID="+env.ContainerID,
		"CARGO_SOURCE="+env.Source,
		"CARGO_TARGET="+env.Target,
	)
	if which == HookFailedRestore {
		cmd.Env = append(cmd.Env, "CARGO_ERROR="+env.Error)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// A process group of its own, so that cancelling kills the commands the
	// shell started too, not the shell alone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = hookWaitDelay
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("hook %s (%q) was stopped: %w", which, command, context.Cause(ctx))
	}
	return fmt.Errorf("hook %s (%q) failed: %w", which, command, err)
}
