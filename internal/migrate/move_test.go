//go:build failpoints

package migrate

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/internal/failpoint"
)

// heard records what a move's Progress hears.
type heard []string

func (h *heard) PhaseStarted(name string) { *h = append(*h, "start "+name) }
func (h *heard) PhaseDone(p Phase)        { *h = append(*h, "done "+p.Name) }

// A failpoint after a phase fails the move there: the phase counts as
// failed, and the next one does not run.
func TestPhaseFailpoint(t *testing.T) {
	defer failpoint.Set("migrate.after-create", "error")()
	var h heard
	m := &mover{opts: MoveOptions{Progress: &h}, res: &Result{}}
	ran := map[string]bool{}
	do := func(name string) step {
		return step{name, func(context.Context) (string, error) { ran[name] = true; return name + " done", nil }}
	}
	err := m.phases(context.Background(), do("volumes"), do("create"), do("start"))
	if !errors.Is(err, failpoint.ErrInjected) || !strings.HasPrefix(err.Error(), "create: failure injected at migrate.after-create") {
		t.Fatalf("phases = %v", err)
	}
	if !ran["create"] || ran["start"] {
		t.Errorf("ran %v: want create run, start not", ran)
	}
	if got := strings.Join(h, ", "); got != "start volumes, done volumes, start create" {
		t.Errorf("progress heard %q", got)
	}
	if len(m.res.Phases) != 1 || m.res.Phases[0].Name != "volumes" || m.res.Phases[0].Detail != "volumes done" {
		t.Errorf("phases %+v", m.res.Phases)
	}
}
