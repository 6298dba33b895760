package migrate

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/volume"
	"github.com/moby/moby/client"

	"github.com/cargo-migrate/cargo/internal/failpoint"
)

func TestLeaseState(t *testing.T) {
	l := &lease{Holder: "them", TTL: 20 * time.Second}
	tests := []struct {
		name string
		l    *lease
		mine string
		age  time.Duration
		gone bool
		live bool
		left time.Duration
	}{
		{"no lease", nil, "me", 0, false, false, 0},
		{"released", &lease{}, "me", 0, false, false, 0},
		{"just renewed", l, "me", 0, false, true, 21 * time.Second},
		{"renewed 5s ago", l, "me", 5 * time.Second, false, true, 16 * time.Second},
		{"within the clock slack", l, "me", 20*time.Second + 500*time.Millisecond, false, true, 500 * time.Millisecond},
		{"expired", l, "me", 21 * time.Second, false, false, 0},
		{"long expired", l, "me", time.Hour, false, false, 0},
		{"renewed in the future (clock skew)", l, "me", -time.Minute, false, true, 21 * time.Second},
		{"mine", l, "them", 0, false, false, 0},
		{"holder gone", l, "me", 0, true, false, 0},
		{"no duration", &lease{Holder: "them"}, "me", 0, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live, left := tt.l.state(tt.mine, tt.age, tt.gone)
			if live != tt.live || left != tt.left {
				t.Fatalf("state = %v, %v; want %v, %v", live, left, tt.live, tt.left)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20"
	tests := []struct {
		in             string
		state, started string
		ok             bool
	}{
		{"123 (docker-migrate) S" + tail, "S", "4242", true},
		{"123 (a (b) c) Z" + tail, "Z", "4242", true},
		{"123 (x) R 1 2", "", "", false},
		{"garbage", "", "", false},
	}
	for _, tt := range tests {
		state, started, ok := parseStat(tt.in)
		if state != tt.state || started != tt.started || ok != tt.ok {
			t.Errorf("parseStat(%q) = %q, %q, %v", tt.in, state, started, ok)
		}
	}
}

func TestHolderGone(t *testing.T) {
	here := proc{PID: 1, Boot: "boot", NS: "pid:[1]"}
	l := func(boot, ns string) *lease {
		return &lease{PID: 77, Boot: boot, PIDNS: ns, ProcStart: "500"}
	}
	stat := func(s string, err error) func(int) (string, error) {
		return func(int) (string, error) { return s, err }
	}
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 %s 19"
	running := "77 (docker-migrate) S" + strings.Replace(tail, "%s", "500", 1)
	tests := []struct {
		name string
		l    *lease
		stat func(int) (string, error)
		gone bool
	}{
		{"runs", l("boot", "pid:[1]"), stat(running, nil), false},
		{"no such process", l("boot", "pid:[1]"), stat("", os.ErrNotExist), true},
		{"zombie", l("boot", "pid:[1]"), stat(strings.Replace(running, " S ", " Z ", 1), nil), true},
		{"PID reused", l("boot", "pid:[1]"), stat("77 (sh) S"+strings.Replace(tail, "%s", "900", 1), nil), true},
		{"unreadable", l("boot", "pid:[1]"), stat("", os.ErrPermission), false},
		{"another machine", l("other", "pid:[1]"), stat("", os.ErrNotExist), false},
		{"another boot unknown", l("", "pid:[1]"), stat("", os.ErrNotExist), false},
		{"another PID namespace", l("boot", "pid:[2]"), stat("", os.ErrNotExist), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := holderGone(tt.l, here, tt.stat); got != tt.gone {
				t.Fatalf("holderGone = %v, want %v", got, tt.gone)
			}
		})
	}
}

func TestBusyMessage(t *testing.T) {
	e := &busyError{rec: &moveRecord{Container: "web", Lease: &lease{PID: 42, Host: "laptop"}}, age: 3 * time.Second, left: 17*time.Second + time.Millisecond}
	msg := e.Error()
	for _, want := range []string{"web is being moved by another docker migrate (pid 42 on laptop", "renewed 3s ago", "run this again after 18s"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if !errors.Is(e, errMoveBusy) {
		t.Error("not errMoveBusy")
	}
	e.taken = true
	if msg := e.Error(); !strings.Contains(msg, "another docker migrate (pid 42 on laptop") || !strings.Contains(msg, "took the move of web over") || strings.Contains(msg, "run this again") {
		t.Errorf("taken: %q", msg)
	}
}

// volumeStore is an engine's volume store as the record sees it: a
// create of an existing name returns the volume there, as the engine does.
type volumeStore struct {
	client.APIClient
	mu      sync.Mutex
	vols    map[string]volume.Volume
	created int
	// beforeCreate runs before each create, without the lock.
	beforeCreate func(name string)
}

func (s *volumeStore) VolumeCreate(_ context.Context, o client.VolumeCreateOptions) (client.VolumeCreateResult, error) {
	if s.beforeCreate != nil {
		s.beforeCreate(o.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.vols[o.Name]; ok {
		return client.VolumeCreateResult{Volume: v}, nil
	}
	s.created++
	v := volume.Volume{Name: o.Name, Driver: o.Driver, Labels: o.Labels, CreatedAt: time.Now().UTC().Format(time.RFC3339)}
	s.vols[o.Name] = v
	return client.VolumeCreateResult{Volume: v}, nil
}

func (s *volumeStore) VolumeList(context.Context, client.VolumeListOptions) (client.VolumeListResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r client.VolumeListResult
	for _, v := range s.vols {
		r.Items = append(r.Items, v)
	}
	return r, nil
}

func (s *volumeStore) VolumeRemove(_ context.Context, name string, _ client.VolumeRemoveOptions) (client.VolumeRemoveResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vols, name)
	return client.VolumeRemoveResult{}, nil
}

func (s *volumeStore) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	var r client.SystemInfoResult
	r.Info.SystemTime = time.Now().UTC().Format(time.RFC3339Nano)
	return r, nil
}

func (s *volumeStore) newest(t *testing.T) *moveRecord {
	t.Helper()
	all, err := records(context.Background(), s)
	if err != nil || len(all) != 1 {
		t.Fatalf("records: %v, %v", all, err)
	}
	for _, r := range all {
		return r
	}
	return nil
}

// Two runs that both found no record: the second to write the first
// version loses and changes nothing, whether the first's version is still
// there or already pruned for a newer one.
func TestRecordCompareAndSet(t *testing.T) {
	for _, ahead := range []int{0, 2} {
		s := &volumeStore{vols: map[string]volume.Volume{}}
		actx, a := takeLease(context.Background())
		bctx, b := takeLease(context.Background())
		ra := &moveRecord{Container: "web", ContainerID: "0123456789abcdef", Source: "h1", Target: "h2", Phase: "image"}
		rb := *ra
		if err := ra.save(actx, s); err != nil {
			t.Fatal(err)
		}
		for range ahead {
			ra.Phase = "stop"
			if err := ra.save(actx, s); err != nil {
				t.Fatal(err)
			}
		}
		err := rb.save(bctx, s)
		var be *busyError
		if !errors.As(err, &be) || !strings.Contains(err.Error(), "web is being moved by another docker migrate") {
			t.Fatalf("ahead %d: the second run's save: %v", ahead, err)
		}
		if got := s.newest(t); got.Seq != 1+ahead || got.Lease == nil || got.Lease.Holder != a.token || len(s.vols) != 1 {
			t.Fatalf("ahead %d: the record is %+v, %d volumes", ahead, got, len(s.vols))
		}
		// The winner goes on; a reader keeps out while its lease lives.
		if err := busy(context.Background(), s, s.newest(t), ""); !errors.Is(err, errMoveBusy) {
			t.Fatalf("busy: %v", err)
		}
		if err := busy(context.Background(), s, s.newest(t), a.token); err != nil {
			t.Fatalf("busy for the holder itself: %v", err)
		}
		a.end()
		b.end()
		got := s.newest(t)
		if got.Lease != nil || got.Phase != ra.Phase {
			t.Fatalf("after end: %+v", got)
		}
		if err := busy(context.Background(), s, got, ""); err != nil {
			t.Fatalf("a released lease keeps out: %v", err)
		}
	}
}

// A run whose lease another one overrode (rollback --force) loses the
// move at its next renewal: its context ends with the reason, and its
// saves fail without writing.
func TestRenewalLosesToANewerRecord(t *testing.T) {
	s := &volumeStore{vols: map[string]volume.Volume{}}
	actx, a := takeLeaseFor(context.Background(), 200*time.Millisecond)
	defer a.end()
	ra := &moveRecord{Container: "web", ContainerID: "0123456789abcdef", Source: "h1", Target: "h2", Phase: "stop"}
	if err := ra.save(actx, s); err != nil {
		t.Fatal(err)
	}
	// Renewals go on: the sequence number grows, Updated stays.
	updated := s.newest(t).Updated
	deadline := time.Now().Add(5 * time.Second)
	for s.newest(t).Seq < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no renewals")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.newest(t); !got.Updated.Equal(updated) || got.Phase != "stop" {
		t.Fatalf("a renewal changed the record: %+v", got)
	}
	bctx, b := takeLease(context.Background())
	defer b.end()
	rb := s.newest(t)
	if err := rb.claim(bctx, s); err != nil {
		t.Fatal(err)
	}
	select {
	case <-actx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the overridden run goes on")
	}
	if err := context.Cause(actx); !errors.Is(err, errMoveBusy) || !strings.Contains(err.Error(), "took the move of web over") {
		t.Fatalf("cause %v", err)
	}
	n := s.created
	ra.Phase = "layer"
	if err := ra.save(actx, s); !errors.Is(err, errMoveBusy) || s.created != n {
		t.Fatalf("the loser's save: %v, %d volumes made", err, s.created-n)
	}
	if got := s.newest(t); got.Lease == nil || got.Lease.Holder != b.token || got.Phase != "stop" {
		t.Fatalf("record %+v", got)
	}
}

// A removed record is not made again by a renewal.
func TestRemoveStopsRenewals(t *testing.T) {
	s := &volumeStore{vols: map[string]volume.Volume{}}
	ctx, h := takeLeaseFor(context.Background(), 100*time.Millisecond)
	r := &moveRecord{Container: "web", ContainerID: "0123456789abcdef", Source: "h1", Target: "h2", Phase: "stop"}
	if err := r.save(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := r.remove(ctx, s); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // three renewal periods, which must write nothing
	h.end()
	if len(s.vols) != 0 {
		t.Fatalf("left %v", s.vols)
	}
}

// Only a failpoints build reads the lease's duration from its
// environment.
func TestLeaseTTL(t *testing.T) {
	t.Setenv(leaseEnv, "3s")
	want := defaultLeaseTTL
	if failpoint.Enabled {
		want = 3 * time.Second
	}
	if got := leaseTTL(); got != want {
		t.Fatalf("leaseTTL = %v, want %v", got, want)
	}
	t.Setenv(leaseEnv, "soon")
	if got := leaseTTL(); got != defaultLeaseTTL {
		t.Fatalf("leaseTTL of a bad value = %v", got)
	}
}

// A phase's save that finds the move taken marks the run lost, so that
// the move does not roll back what is now the other run's.
func TestSaveLosesToANewerRecord(t *testing.T) {
	s := &volumeStore{vols: map[string]volume.Volume{}}
	actx, a := takeLeaseFor(context.Background(), time.Hour)
	defer a.end()
	ra := &moveRecord{Container: "web", ContainerID: "0123456789abcdef", Source: "h1", Target: "h2", Phase: "stop"}
	if err := ra.save(actx, s); err != nil {
		t.Fatal(err)
	}
	bctx, b := takeLeaseFor(context.Background(), time.Hour)
	defer b.end()
	if err := s.newest(t).claim(bctx, s); err != nil {
		t.Fatal(err)
	}
	ra.Phase = "layer"
	if err := ra.save(actx, s); !errors.Is(err, errMoveBusy) || !strings.Contains(err.Error(), "took the move of web over") {
		t.Fatalf("the save: %v", err)
	}
	if a.lostErr() == nil || actx.Err() == nil {
		t.Fatalf("the run goes on: lost %v, context %v", a.lostErr(), actx.Err())
	}
	if got := s.newest(t); got.Phase != "stop" || got.Lease.Holder != b.token {
		t.Fatalf("record %+v", got)
	}
}

// A record removed under a running move (a rollback --force, a failover
// with --remove-source) is not made again by its renewals: the run stops.
func TestRenewalFindsTheRecordRemoved(t *testing.T) {
	s := &volumeStore{vols: map[string]volume.Volume{}}
	ctx, a := takeLeaseFor(context.Background(), 200*time.Millisecond)
	defer a.end()
	r := &moveRecord{Container: "web", ContainerID: "0123456789abcdef", Source: "h1", Target: "h2", Phase: "stop"}
	if err := r.save(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := s.newest(t).remove(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the run goes on")
	}
	if err := context.Cause(ctx); !lostMove(err) || !strings.HasPrefix(err.Error(), "the record of the move of web on h1 was removed") {
		t.Fatalf("cause %v", err)
	}
	if all, err := records(context.Background(), s); err != nil || len(all) != 0 {
		t.Fatalf("records %v, %v", all, err)
	}
}
