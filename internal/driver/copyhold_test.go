package driver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cargo-migrate/cargo/internal/state"
)

func TestCopyOption(t *testing.T) {
	for _, tt := range []struct {
		opts    map[string]string
		wantErr string
	}{
		{map[string]string{"from": "t", "copy": "after-mount"}, ""},
		{map[string]string{"from": "t", "copy": "later"}, `option copy="later": the one value is after-mount`},
	} {
		kind, err := kindOf(tt.opts)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("kindOf(%v) = %v, %v; want error %q", tt.opts, kind, err, tt.wantErr)
		}
		if tt.wantErr == "" && tt.opts["from"] != "" && kind != state.KindFederated {
			t.Errorf("kindOf(%v) = %v", tt.opts, kind)
		}
	}
}

// A move's volume holds its background copy until copyHold after its
// first mount, and gives up holding when the copy is stopped.
func TestHoldCopy(t *testing.T) {
	f := &federation{mounted: make(chan struct{})}
	done := make(chan bool, 1)
	go func() { done <- f.holdCopy(context.Background()) }()
	select {
	case <-done:
		t.Fatal("the copy started before the volume was mounted")
	case <-time.After(50 * time.Millisecond):
	}
	mounted := time.Now()
	f.markMounted()
	f.markMounted() // a second mount changes nothing
	if !<-done {
		t.Fatal("holdCopy refused the copy")
	}
	if held := time.Since(mounted); held < copyHold {
		t.Fatalf("the copy started %v after the mount, want %v", held, copyHold)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stopped := &federation{mounted: make(chan struct{})}
	go func() { done <- stopped.holdCopy(ctx) }()
	cancel()
	if <-done {
		t.Fatal("a stopped copy was let start")
	}
}
