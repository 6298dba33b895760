// Package fusekeep keeps the plugin's FUSE connections open across a crash
// of the process that serves them.
//
// The plugin runs as two processes. The holder, the plugin's entrypoint
// (PID 1 of its container), does nothing but start the worker (the same
// binary again), keep the descriptors the worker hands it, give them to
// the next worker when one exits, start it again, and forward SIGTERM and
// SIGINT. The worker does everything else. While the holder keeps a FUSE
// connection's descriptor, the kernel keeps the connection when the worker
// dies (panic, SIGKILL, OOM kill): requests wait, and the next worker
// serves them; lazyfs does the serving side. When the holder itself goes
// (the whole plugin is stopped or killed), the connections go with it.
package fusekeep

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FDEnv names, in the worker's environment, its end of the socket to the
// holder.
const FDEnv = "CARGO_FUSEKEEP_FD"

// WorkerName is the worker's command name (/proc/PID/comm); the holder
// keeps the binary's.
const WorkerName = "cargo-worker"

// InWorker reports whether this process was started by a holder.
func InWorker() bool { return os.Getenv(FDEnv) != "" }

const (
	// A worker that ran this long before exiting is not crash-looping.
	healthyRun = 10 * time.Second
	// maxFastExits is how many workers in a row may exit before
	// healthyRun before the holder gives up and exits, letting the
	// engine restart the plugin (and the views go).
	maxFastExits = 6
	maxDelay     = 2 * time.Second
	// drainWait bounds the wait for a dead worker's queued messages.
	drainWait = 2 * time.Second
)

// Hold runs this process as the holder of the worker, this binary started
// again with the same arguments, and returns the exit status for os.Exit:
// the worker's, once it exits after a forwarded SIGTERM or SIGINT (or the
// last of too many crashes in a row).
func Hold(log *slog.Logger) int {
	store := NewStore()
	defer store.Close()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stopping := false
	fast := 0
	for {
		started := time.Now()
		w, err := startWorker(store)
		if err != nil {
			log.Error("cannot start the plugin's worker", "error", err)
			return 1
		}
		status := w.wait(sigs, &stopping)
		<-w.drained(drainWait)
		if stopping {
			return exitCode(status)
		}
		if time.Since(started) >= healthyRun {
			fast = 0
		} else {
			fast++
		}
		if fast >= maxFastExits {
			log.Error("the plugin's worker keeps exiting; giving up", "exits", fast, "status", describe(status))
			return exitCode(status)
		}
		delay := time.Duration(0)
		if fast > 1 {
			delay = min(maxDelay, 100*time.Millisecond<<(fast-2))
		}
		log.Error("the plugin's worker exited; starting it again", "status", describe(status),
			"kept", store.Len(), "in", delay)
		select {
		case <-time.After(delay):
		case <-sigs:
			return exitCode(status)
		}
	}
}

type worker struct {
	pid   int
	store *Store
	done  chan struct{} // closed when the store has read the worker's socket to its end
}

func startWorker(store *Store) (*worker, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fusekeep: %w", err)
	}
	child := os.NewFile(uintptr(pair[1]), "fusekeep")
	defer child.Close()
	// /proc/self/exe rather than os.Args[0]: the worker is this very
	// binary, wherever it was started from.
	p, err := os.StartProcess("/proc/self/exe", os.Args, &os.ProcAttr{
		Env:   append(os.Environ(), FDEnv+"=3"),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, child},
	})
	if err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("fusekeep: %w", err)
	}
	w := &worker{pid: p.Pid, store: store, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		store.Serve(pair[0])
	}()
	return w, nil
}

// wait forwards stop signals to the worker until it exits, reaping every
// other child on the way: the holder is PID 1 of the plugin's container,
// so orphans become its children.
func (w *worker) wait(sigs <-chan os.Signal, stopping *bool) unix.WaitStatus {
	exited := make(chan unix.WaitStatus, 1)
	go func() {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || pid == w.pid {
				exited <- ws
				return
			}
		}
	}()
	for {
		select {
		case s := <-sigs:
			*stopping = true
			//nolint:errcheck // the worker may have exited already; wait sees it
			syscall.Kill(w.pid, s.(syscall.Signal))
		case ws := <-exited:
			return ws
		}
	}
}

func (w *worker) drained(limit time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		select {
		case <-w.done:
		case <-time.After(limit):
		}
	}()
	return ch
}

func exitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}
