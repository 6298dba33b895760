package copier

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/replica"
)

// blockingSource serves what fakeSource serves, but each Batch and
// ReadRange waits until released, whatever its context says: a source
// slow to notice that it was cancelled.
type blockingSource struct {
	*fakeSource
	release chan struct{}
	entered chan struct{} // one send per call started
	active  atomic.Int32  // calls under way
}

func newBlockingSource(f *fakeSource) *blockingSource {
	return &blockingSource{fakeSource: f, release: make(chan struct{}), entered: make(chan struct{}, 100)}
}

func (b *blockingSource) hold() func() {
	b.active.Add(1)
	b.entered <- struct{}{}
	<-b.release
	return func() { b.active.Add(-1) }
}

func (b *blockingSource) Batch(ctx context.Context, idx []int, fn func(int, int64, io.Reader) error) error {
	defer b.hold()()
	return b.fakeSource.Batch(ctx, idx, fn)
}

func (b *blockingSource) ReadRange(ctx context.Context, i int, off, n int64, w io.Writer) (int64, error) {
	defer b.hold()()
	return b.fakeSource.ReadRange(ctx, i, off, n, w)
}

func (b *blockingSource) waitEntered(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-b.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the copier never called the source")
		}
	}
}

func wait[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never returned", what)
		panic("unreachable")
	}
}

// Close returns only once every fetch the copier started has ended,
// including those whose readers gave up, and nothing is written after.
func TestCloseWaitsForFetches(t *testing.T) {
	f := newFixture(t, 20)
	src := newBlockingSource(f.src)
	r, err := replica.Open(f.dir, f.m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c := New(r, src, Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))

	// A read of a small file fetches it whole; a read of a large one
	// fetches its bytes and, on the side, their chunk.
	readCtx, giveUp := context.WithCancel(context.Background())
	small, big := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := c.ReadAt(readCtx, 3, make([]byte, 1), 0)
		small <- err
	}()
	go func() {
		_, err := c.ReadAt(readCtx, len(f.m.Entries)-4, make([]byte, 10), replica.ChunkSize+3)
		big <- err
	}()
	src.waitEntered(t, 3)
	// The small file's reader gives up; its fetch carries on.
	giveUp()
	if err := wait(t, "an abandoned read", small); !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned read: %v", err)
	}
	if n := src.active.Load(); n != 3 {
		t.Fatalf("%d fetches under way, want 3", n)
	}
	run := make(chan error, 1)
	go func() { run <- c.Run(context.Background()) }()

	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatalf("Close returned while %d fetches were under way", src.active.Load())
	case <-time.After(100 * time.Millisecond):
	}
	close(src.release)
	wait(t, "Close", closed)
	if n := src.active.Load(); n != 0 {
		t.Fatalf("Close returned while %d fetches were under way", n)
	}
	if err := wait(t, "Run", run); !errors.Is(err, context.Canceled) && !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
	_ = wait(t, "the large file's read", big) // its bytes or its cancellation: it returned

	files, bytes := r.Progress()
	sent := f.src.snapshot()
	time.Sleep(50 * time.Millisecond)
	if f2, b2 := r.Progress(); f2 != files || b2 != bytes || len(f.src.snapshot()) != len(sent) {
		t.Fatal("the copier wrote to the replica after Close")
	}
}

// Close may be called more than once, at once; calls after it fail with
// ErrClosed, and Status still answers.
func TestCallsAfterClose(t *testing.T) {
	f := newFixture(t, 20)
	c, _ := f.copier(t, Options{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(c.Close)
	}
	wg.Wait()
	c.Close()
	if err := c.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
	if _, err := c.ReadAt(context.Background(), 3, make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadAt after Close: %v", err)
	}
	if _, _, err := c.OpenLocal(3); !errors.Is(err, ErrClosed) {
		t.Fatalf("OpenLocal after Close: %v", err)
	}
	if s := c.Status(); s.State != StateCopying || s.FilesCopied != 0 {
		t.Fatalf("status after Close: %+v", s)
	}
	f.src.mu.Lock()
	defer f.src.mu.Unlock()
	if len(f.src.wholes) != 0 || len(f.src.chunks) != 0 {
		t.Fatal("the source was asked for files after Close")
	}
}
