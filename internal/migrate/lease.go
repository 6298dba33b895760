package migrate

// The move's lease: which `docker migrate` process drives a move, so that
// a second one refuses while the first runs, and a rerun after a killed
// CLI still finishes the move.
//
// The lease is part of the record (record.go): the holder's random token,
// its process and machine, and how long it counts after its last renewal.
// A move renews it every ttl/4 by saving the record again, serialised
// with the phases' saves. Every save is a compare-and-set on the record's
// sequence number (moveRecord.write): a run that finds a newer record, or
// its own next one already made by someone else, has lost the move and
// stops without undoing anything, since what it would undo is the other
// run's now.
//
// A lease is live while its holder's process runs, as far as this machine
// can tell, and for ttl after its last renewal otherwise. The renewal's
// age is measured on the source engine's clock (the record volume's
// CreatedAt against the engine's SystemTime), so the clocks of the CLI
// machines do not matter; only when the engine does not tell is the
// holder's own clock compared with ours, and then a skew between the two
// machines shortens or stretches the wait by as much.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/failpoint"
)

// defaultLeaseTTL is how long a lease counts after its last renewal; a
// holder renews it four times as often, so that a slow save or two do not
// lose it.
const defaultLeaseTTL = 20 * time.Second

// leaseEnv sets the lease's duration (a Go duration, such as 3s) in
// failpoints builds only, so that the tests of a killed move need not wait
// 20 s. Release builds always use defaultLeaseTTL.
const leaseEnv = "CARGO_MOVE_LEASE"

// clockSlack covers the engine's CreatedAt, which has whole seconds: an
// age read from it is up to a second too long.
const clockSlack = time.Second

// lease is the record's part that says who drives the move.
type lease struct {
	// Holder is the holding run's random token.
	Holder string `json:"holder"`
	PID    int    `json:"pid"`
	Host   string `json:"host"`
	// Boot, PIDNS and ProcStart identify the holder's process, so that a
	// run on the same machine and in the same PID namespace can tell at
	// once that it is gone.
	Boot      string `json:"boot,omitempty"`
	PIDNS     string `json:"pidns,omitempty"`
	ProcStart string `json:"proc_start,omitempty"`
	// Since is when the holder took the move; Renewed its last renewal,
	// both on the holder's clock.
	Since   time.Time     `json:"since"`
	Renewed time.Time     `json:"renewed"`
	TTL     time.Duration `json:"ttl_ns"`
}

// state says whether l, read age after its last renewal, keeps a run with
// token mine out, and for how long at most. A lease of mine, a holder
// known to be gone and a lease without a duration keep nobody out.
func (l *lease) state(mine string, age time.Duration, gone bool) (live bool, left time.Duration) {
	if l == nil || l.Holder == "" || l.Holder == mine || gone || l.TTL <= 0 {
		return false, 0
	}
	left = l.TTL + clockSlack - max(age, 0)
	if left <= 0 {
		return false, 0
	}
	return true, left
}

// proc identifies a process across machines and PID namespaces.
type proc struct {
	PID               int
	Boot, NS, Started string
}

// self is this process, read once.
var self = sync.OnceValue(func() proc {
	p := proc{PID: os.Getpid()}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		p.Boot = strings.TrimSpace(string(b))
	}
	p.NS, _ = os.Readlink("/proc/self/ns/pid")
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		_, p.Started, _ = parseStat(string(b))
	}
	return p
})

// parseStat reads a process's state and start time (in clock ticks after
// boot) from its /proc/PID/stat. The command name, in parentheses, may
// hold spaces and parentheses itself.
func parseStat(s string) (state, started string, ok bool) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", "", false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field 22 (starttime) is f[19].
	if len(f) < 20 {
		return "", "", false
	}
	return f[0], f[19], true
}

// holderGone reports whether l's holder is known to have ended: it ran on
// this machine (same boot) in our PID namespace, and its PID is free, a
// zombie, or another process now. Elsewhere nothing is known.
func holderGone(l *lease, here proc, readStat func(pid int) (string, error)) bool {
	if l == nil || l.Boot == "" || l.Boot != here.Boot || l.PIDNS == "" || l.PIDNS != here.NS || l.PID <= 0 {
		return false
	}
	s, err := readStat(l.PID)
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	state, started, ok := parseStat(s)
	return ok && (state == "Z" || state == "X" || started != l.ProcStart)
}

func readProcStat(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return string(b), err
}

// errMoveBusy is what a run that another one keeps out of a move fails
// with.
var errMoveBusy = errors.New("the move is held by another docker migrate")

// goneError is what a run whose record was removed under it fails with:
// a rollback or a failover ended the move.
type goneError struct{ container, source string }

func (e *goneError) Error() string {
	return fmt.Sprintf("the record of the move of %s on %s was removed (by a rollback, or a failover with --remove-source); this run stops here and leaves it as it is",
		e.container, e.source)
}

// lostMove reports whether err says that this run no longer holds the
// move.
func lostMove(err error) bool {
	var g *goneError
	return errors.Is(err, errMoveBusy) || errors.As(err, &g)
}

// busyError says who holds the move of a container.
type busyError struct {
	rec  *moveRecord
	age  time.Duration
	left time.Duration
	// taken is set when the other run took the move from this one.
	taken bool
}

func (e *busyError) Error() string {
	l := e.rec.Lease
	who := "another docker migrate"
	if e.taken {
		if l != nil {
			who = fmt.Sprintf("another docker migrate (pid %d on %s, started %s)", l.PID, l.Host, l.Since.Local().Format(time.TimeOnly))
		}
		return fmt.Sprintf("%s took the move of %s over (a rollback --force, or a rerun after this one could not renew its hold); this run stops here and leaves the move to it",
			who, e.rec.Container)
	}
	if l != nil {
		who = fmt.Sprintf("another docker migrate (pid %d on %s, started %s, renewed %s ago)",
			l.PID, l.Host, l.Since.Local().Format(time.TimeOnly), e.age.Round(time.Second))
	}
	return fmt.Sprintf("%s is being moved by %s; wait for it to finish, or if that process was killed, run this again after %ds",
		e.rec.Container, who, int((e.left+time.Second-1)/time.Second))
}

func (e *busyError) Unwrap() error { return errMoveBusy }

// busy returns a *busyError if rec, the newest record of a move read from
// api, is held by a live run other than this one.
func busy(ctx context.Context, api client.APIClient, rec *moveRecord, mine string) error {
	if rec == nil || rec.Lease == nil {
		return nil
	}
	age := leaseAge(ctx, api, rec)
	live, left := rec.Lease.state(mine, age, holderGone(rec.Lease, self(), readProcStat))
	if !live {
		return nil
	}
	return &busyError{rec: rec, age: age, left: left}
}

// leaseAge is how long ago rec's lease was renewed: on the source
// engine's clock when it tells (both times are its own), else on ours
// against the holder's.
func leaseAge(ctx context.Context, api client.APIClient, rec *moveRecord) time.Duration {
	if !rec.createdAt.IsZero() {
		if info, err := api.Info(ctx, client.InfoOptions{}); err == nil {
			if now, err := time.Parse(time.RFC3339Nano, info.Info.SystemTime); err == nil {
				return now.Sub(rec.createdAt)
			}
		}
	}
	return time.Since(rec.Lease.Renewed)
}

// leaseTTL is the duration of this run's leases.
func leaseTTL() time.Duration {
	if failpoint.Enabled {
		if d, err := time.ParseDuration(os.Getenv(leaseEnv)); err == nil && d >= 100*time.Millisecond {
			return d
		}
	}
	return defaultLeaseTTL
}

// holder is one run's hold on a move: it stamps the record's saves with
// its lease and renews the lease from a goroutine it owns, until end.
type holder struct {
	token      string
	ttl, every time.Duration
	since      time.Time
	// cancel ends the context of the run holding the move, with the
	// reason it lost it.
	cancel context.CancelCauseFunc

	stopOnce sync.Once
	stopc    chan struct{}
	wg       sync.WaitGroup

	// mu serialises the record's saves, its renewals, its release and
	// its removal; the fields below are under it.
	mu  sync.Mutex
	rec *moveRecord
	api client.APIClient
	// last is the record as last written, what a renewal writes again
	// with a new sequence number and renewal time: the move changes rec
	// between saves.
	last []byte
	// lastOK is when a write last succeeded, on our monotonic clock.
	lastOK time.Time
	lost   error
	// over is set once the record is removed or the lease released.
	over bool
}

type holderKey struct{}

// takeLease gives ctx a holder for the record saves under it, and a
// context the holder cancels when it loses the move.
func takeLease(ctx context.Context) (context.Context, *holder) {
	return takeLeaseFor(ctx, leaseTTL())
}

func takeLeaseFor(ctx context.Context, ttl time.Duration) (context.Context, *holder) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := &holder{token: hex.EncodeToString(b), ttl: ttl, every: ttl / 4, since: time.Now().UTC(), stopc: make(chan struct{})}
	ctx, h.cancel = context.WithCancelCause(ctx)
	return context.WithValue(ctx, holderKey{}, h), h
}

func holderOf(ctx context.Context) *holder {
	h, _ := ctx.Value(holderKey{}).(*holder)
	return h
}

// stamp is the lease as written now.
func (h *holder) stamp() *lease {
	p := self()
	host, _ := os.Hostname()
	return &lease{Holder: h.token, PID: p.PID, Host: host, Boot: p.Boot, PIDNS: p.NS, ProcStart: p.Started,
		Since: h.since, Renewed: time.Now().UTC(), TTL: h.ttl}
}

// saved notes a write of rec through api, under mu; the first starts the
// renewals.
func (h *holder) saved(rec *moveRecord, api client.APIClient, data []byte) {
	h.last, h.lastOK = data, time.Now()
	if h.rec != nil {
		return
	}
	h.rec, h.api = rec, api
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(h.every)
		defer t.Stop()
		for {
			select {
			case <-h.stopc:
				return
			case <-t.C:
				h.renew()
			}
		}
	}()
}

// renew writes the record as last saved again, with a new renewal time.
// Losing the move, or losing touch with the source for so long that
// another run may take it, cancels the holding run.
func (h *holder) renew() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost != nil || h.over {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.every)
	defer cancel()
	err := h.rewrite(ctx, h.stamp())
	var b *busyError
	switch {
	case err == nil:
	case errors.As(err, &b):
		b.taken = true
		h.fail(err)
	case lostMove(err):
		h.fail(err)
	case time.Since(h.lastOK) >= h.ttl-h.every:
		// The move changes rec outside mu: say it from the last write.
		var snap moveRecord
		_ = json.Unmarshal(h.last, &snap)
		h.fail(fmt.Errorf("%w: %s could not be reached for %s (%w), so another docker migrate may take the move over; this run stops and leaves it as it is: finish it with `%s`, or undo it with `%s`",
			errMoveBusy, snap.Source, time.Since(h.lastOK).Round(time.Second), err, snap.FinishCommand(), snap.RollbackCommand()))
	}
}

func (h *holder) fail(err error) {
	h.lost = err
	h.cancel(err)
}

// rewrite writes the record as last saved with lease l (nil: released)
// as the next version, under mu.
func (h *holder) rewrite(ctx context.Context, l *lease) error {
	var snap moveRecord
	if err := json.Unmarshal(h.last, &snap); err != nil {
		return err
	}
	h.rec.Seq++
	snap.Seq, snap.Lease = h.rec.Seq, l
	data, err := json.Marshal(&snap)
	if err != nil {
		return err
	}
	if err := snap.write(ctx, h.api, data, h.rec.known); err != nil {
		return err
	}
	h.rec.known = snap.Seq
	h.last, h.lastOK = data, time.Now()
	return nil
}

// lostErr is why the holder lost the move, nil if it did not.
func (h *holder) lostErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lost
}

// end stops the renewals and waits for them, then releases the lease on
// a record that stays (a finished move, a failed rollback), so that the
// next run need not wait for it to expire. A failed release only makes
// that run wait.
func (h *holder) end() {
	h.stopOnce.Do(func() { close(h.stopc) })
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rec != nil && h.lost == nil && !h.over {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = h.rewrite(ctx, nil)
		cancel()
	}
	h.over = true
	h.cancel(nil)
}
