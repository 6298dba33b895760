//go:build failpoints

package failpoint

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		spec    string
		want    map[string]action
		wantErr bool
	}{
		{spec: "", want: map[string]action{}},
		{spec: "a=error;b=kill", want: map[string]action{"a": {kind: kindError}, "b": {kind: kindKill}}},
		{spec: "a=error(disk full)\n# comment\nb = 2*panic", want: map[string]action{
			"a": {kind: kindError, msg: "disk full"}, "b": {kind: kindPanic, count: 2}}},
		{spec: "a=sleep(15ms)", want: map[string]action{"a": {kind: kindSleep, sleep: 15 * time.Millisecond}}},
		{spec: "a=pause;b=off", want: map[string]action{"a": {kind: kindPause}, "b": {kind: kindOff}}},
		{spec: "a", wantErr: true},
		{spec: "a=explode", wantErr: true},
		{spec: "a=0*error", wantErr: true},
		{spec: "a=sleep(soon)", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parse(tt.spec)
		if (err != nil) != tt.wantErr {
			t.Errorf("parse(%q): error %v, want error %v", tt.spec, err, tt.wantErr)
			continue
		}
		if err == nil && len(got) != len(tt.want) {
			t.Errorf("parse(%q) = %v, want %v", tt.spec, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("parse(%q)[%s] = %+v, want %+v", tt.spec, k, got[k], v)
			}
		}
	}
}

func TestSetAndInject(t *testing.T) {
	if err := Inject("test.unset"); err != nil {
		t.Fatalf("unset point: %v", err)
	}
	reset := Set("test.point", "error(boom)")
	err := Inject("test.point")
	if !errors.Is(err, ErrInjected) {
		t.Fatalf("Inject = %v, want ErrInjected", err)
	}
	reset()
	if err := Inject("test.point"); err != nil {
		t.Fatalf("after reset: %v", err)
	}
	calls := 0
	defer SetFunc("test.func", func() error { calls++; return nil })()
	_ = Inject("test.func")
	_ = Inject("test.func")
	if calls != 2 {
		t.Fatalf("SetFunc: %d calls, want 2", calls)
	}
}

func TestFileCountAndPause(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failpoints")
	UseFile(path)
	if err := os.WriteFile(path, []byte("test.file=1*error\ntest.pause=pause\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Inject("test.file"); err == nil {
		t.Fatal("first hit: want an error")
	}
	if err := Inject("test.file"); err != nil {
		t.Fatalf("second hit of a 1* point: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = Inject("test.pause"); close(done) }()
	select {
	case <-done:
		t.Fatal("a paused point returned while still set")
	case <-time.After(100 * time.Millisecond):
	}
	// A different size marks the change even within the mtime's granularity.
	if err := os.WriteFile(path, []byte("test.pause=off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a paused point did not return once set off")
	}
}
