package driver

import (
	"sync"
	"testing"
	"time"
)

func TestVolumeLocksExcludeOneNameOnly(t *testing.T) {
	var l volumeLocks
	unlockA := l.lock("a")

	// Another name is free while a is held.
	done := make(chan struct{})
	go func() {
		l.lock("b")()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("lock of b waited for a")
	}

	// The same name waits for its holder.
	got := make(chan struct{})
	go func() {
		l.lock("a")()
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("a was taken twice")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	unlockA() // a second release does nothing
	<-got

	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.locks) != 0 {
		t.Fatalf("%d locks kept after every release", len(l.locks))
	}
}

// Pairs taken in both orders at once must not deadlock.
func TestVolumeLocksPairOrder(t *testing.T) {
	var l volumeLocks
	var wg sync.WaitGroup
	var n int // guarded by the pair
	for i := range 200 {
		a, b := "x", "y"
		if i%2 == 1 {
			a, b = b, a
		}
		wg.Go(func() {
			unlock := l.lockPair(a, b)
			n++
			unlock()
		})
		wg.Go(func() { l.lock(a)() })
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock")
	}
	if n != 200 {
		t.Fatalf("n = %d", n)
	}
	l.lockPair("z", "z")() // one name twice is one lock
}
