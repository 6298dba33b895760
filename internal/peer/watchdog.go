package peer

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// watchdog breaks a response body that stops delivering: HTTP/1.1 has no
// pings, so a vanished peer (a cut link sends no reset) would block a read
// for ever. Only time spent blocked in Read counts, so a slow consumer
// never trips it. A tripped body reads as broken (io.ErrUnexpectedEOF), so
// callers resume or retry as after a cut connection.
type watchdog struct {
	body    io.ReadCloser
	idle    time.Duration
	cancel  context.CancelFunc
	timer   *time.Timer
	tripped atomic.Bool
}

func newWatchdog(body io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *watchdog {
	w := &watchdog{body: body, idle: idle, cancel: cancel}
	w.timer = time.AfterFunc(time.Hour, func() {
		w.tripped.Store(true)
		cancel()
	})
	w.timer.Stop()
	return w
}

func (w *watchdog) Read(p []byte) (int, error) {
	w.timer.Reset(w.idle)
	n, err := w.body.Read(p)
	w.timer.Stop()
	if err != nil && w.tripped.Load() {
		err = fmt.Errorf("no data for %v: %w", w.idle, io.ErrUnexpectedEOF)
	}
	return n, err
}

func (w *watchdog) Close() error {
	w.timer.Stop()
	err := w.body.Close()
	w.cancel()
	return err
}
