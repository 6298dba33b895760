//go:build failpoints

package copier

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cargo-migrate/cargo/internal/failpoint"
	"github.com/cargo-migrate/cargo/internal/replica"
)

// A file lost from the replica after it was counted done is found by the
// check before the source is told, and copied again.
func TestRunCopiesAgainWhatVerifyFindsMissing(t *testing.T) {
	tests := []struct {
		name    string
		lose    []string // removed from the replica before each check
		rounds  int      // how many checks remove them
		wantErr bool
	}{
		{name: "small and large file lost once", lose: []string{"d/f0003", "big1"}, rounds: 1},
		{name: "a link name lost once", lose: []string{"d/link2"}, rounds: 1},
		{name: "a file that keeps vanishing", lose: []string{"d/f0007"}, rounds: verifyRounds, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 20)
			checks := 0
			defer failpoint.SetFunc("copier.before-verify", func() error {
				checks++
				if checks > tt.rounds {
					return nil
				}
				for _, p := range tt.lose {
					if err := os.Remove(filepath.Join(f.dir, "data", p)); err != nil {
						return err
					}
				}
				return nil
			})()
			c, _ := f.copier(t, Options{BatchFiles: 8})
			err := c.Run(context.Background())
			if tt.wantErr {
				if !errors.Is(err, replica.ErrIncomplete) {
					t.Fatalf("Run: %v, want an incomplete copy", err)
				}
				if f.src.completed != 0 {
					t.Fatal("the source was told the copy is complete")
				}
				if s := c.Status(); s.State != StateFailed || s.Error == "" {
					t.Fatalf("status %+v, want failed with the reason", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f.verify(t)
			if checks != tt.rounds+1 || f.src.completed != 1 {
				t.Fatalf("%d checks, completed %d times", checks, f.src.completed)
			}
			s := c.Status()
			if s.State != StateComplete || s.FilesCopied != s.FilesTotal || s.BytesCopied != s.BytesTotal {
				t.Fatalf("status %+v", s)
			}
		})
	}
}
