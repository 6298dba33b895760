package driver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/cargo-migrate/cargo/internal/peer"
)

// silentPeer accepts connections and never says a word, as a source host
// whose plugin hangs does: the TLS handshake waits.
type silentPeer struct {
	l        net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
}

func newSilentPeer(t *testing.T) *silentPeer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentPeer{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.accepted.Add(1)
		}
	}()
	t.Cleanup(p.close)
	return p
}

// ticket reaches the silent peer; its credential and fingerprint are
// well formed and never checked.
func (p *silentPeer) ticket(t *testing.T) string {
	t.Helper()
	token, _, err := peer.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tk := peer.Ticket{Addr: p.l.Addr().String(), ExportID: "silent", Token: token,
		Fingerprint: "sha256:" + strings.Repeat("ab", 32)}
	if err := tk.Validate(); err != nil {
		t.Fatal(err)
	}
	return tk.String()
}

// close makes the peer go away: connections reset, new ones refused.
func (p *silentPeer) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// prompt runs fn and fails the test unless it returns within a second,
// as the engine needs of a plugin.
func prompt(t *testing.T, what string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- fn() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(time.Second):
		t.Fatalf("%s: no answer within a second", what)
	}
}

func listed(d *Driver) ([]string, error) {
	l, err := d.List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, v := range l.Volumes {
		out = append(out, v.Name)
	}
	return out, nil
}

// A federated create waiting on its source holds up nothing but itself.
func TestCreateWaitingOnPeerBlocksNothingElse(t *testing.T) {
	f := newFixture(t)
	mustCreate(t, f.d, "other", nil)
	p := newSilentPeer(t)

	created := make(chan error, 1)
	go func() {
		created <- f.d.Create(&volume.CreateRequest{Name: "fed", Options: map[string]string{"from": p.ticket(t)}})
	}()
	waitFor(t, 10*time.Second, "the create reaches the source", func() bool { return p.accepted.Load() > 0 })

	prompt(t, "List", func() error {
		names, err := listed(f.d)
		if err == nil && !slices.Equal(names, []string{"other"}) {
			err = fmt.Errorf("listed %v, want [other]: a volume being created is not there yet", names)
		}
		return err
	})
	prompt(t, "Get of the volume being created", func() error {
		_, err := f.d.Get(&volume.GetRequest{Name: "fed"})
		switch {
		case err == nil:
			return errors.New("Get answered for a volume not there yet")
		case !strings.Contains(err.Error(), "still being created"):
			return fmt.Errorf("err = %w, want still being created", err)
		}
		return nil
	})
	prompt(t, "Path of the volume being created", func() error {
		if _, err := f.d.Path(&volume.PathRequest{Name: "fed"}); err == nil {
			return errors.New("Path answered for a volume not there yet")
		}
		return nil
	})
	prompt(t, "Get of another volume", func() error {
		_, err := f.d.Get(&volume.GetRequest{Name: "other"})
		return err
	})
	prompt(t, "Get of cargo.host", func() error {
		_, err := f.d.Get(&volume.GetRequest{Name: "cargo.host"})
		return err
	})
	prompt(t, "Mount and Unmount of another volume", func() error {
		if _, err := f.d.Mount(&volume.MountRequest{Name: "other", ID: "c1"}); err != nil {
			return err
		}
		return f.d.Unmount(&volume.UnmountRequest{Name: "other", ID: "c1"})
	})
	prompt(t, "Create and Remove of another volume", func() error {
		if err := f.d.Create(&volume.CreateRequest{Name: "third"}); err != nil {
			return err
		}
		return f.d.Remove(&volume.RemoveRequest{Name: "third"})
	})
	select {
	case err := <-created:
		t.Fatalf("the create returned while its source stayed silent: %v", err)
	default:
	}

	// The source goes away: the create fails and leaves nothing.
	p.close()
	select {
	case err := <-created:
		if err == nil || !strings.Contains(err.Error(), "fetching its tree from the source host") {
			t.Fatalf("create: err = %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the create did not fail once its source was gone")
	}
	if _, err := f.d.Get(&volume.GetRequest{Name: "fed"}); err == nil || !strings.Contains(err.Error(), "no such volume") {
		t.Fatalf("Get after the failed create: err = %v, want no such volume", err)
	}
	if _, err := os.Stat(f.d.store.Dir("fed")); !os.IsNotExist(err) {
		t.Fatalf("the failed create left its directory: %v", err)
	}
	f.restart(t)
	if names, _ := listed(f.d); !slices.Equal(names, []string{"other"}) {
		t.Fatalf("after a restart: listed %v, want [other]", names)
	}
}

// A slow unmount of one volume (an overlay detached lazily, say) holds up
// nothing but that volume.
func TestSlowUnmountBlocksNothingElse(t *testing.T) {
	f := newFixture(t)
	mustCreate(t, f.d, "slow", nil)
	mustCreate(t, f.d, "other", nil)
	if _, err := f.d.Mount(&volume.MountRequest{Name: "slow", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	f.mnt.mu.Lock()
	f.mnt.unmountHook = func(target string) {
		if target == f.mp("slow") {
			close(entered)
			<-release
		}
	}
	f.mnt.mu.Unlock()
	unmounted := make(chan error, 1)
	go func() { unmounted <- f.d.Unmount(&volume.UnmountRequest{Name: "slow", ID: "c1"}) }()
	<-entered

	prompt(t, "List", func() error { _, err := f.d.List(); return err })
	prompt(t, "Get of the volume being unmounted", func() error {
		_, err := f.d.Get(&volume.GetRequest{Name: "slow"})
		return err
	})
	prompt(t, "Mount of another volume", func() error {
		_, err := f.d.Mount(&volume.MountRequest{Name: "other", ID: "c2"})
		return err
	})

	// The same volume waits for its unmount to end.
	mounted := make(chan error, 1)
	go func() {
		_, err := f.d.Mount(&volume.MountRequest{Name: "slow", ID: "c3"})
		mounted <- err
	}()
	select {
	case err := <-mounted:
		t.Fatalf("Mount of the volume being unmounted did not wait: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-unmounted; err != nil {
		t.Fatal(err)
	}
	if err := <-mounted; err != nil {
		t.Fatal(err)
	}
	if got := f.mnt.stack[f.mp("slow")]; got != 1 {
		t.Fatalf("%d mounts of slow, want 1", got)
	}
	if refs := f.d.volume("slow").Mounts; !slices.Equal(refs, []string{"c3"}) {
		t.Fatalf("refs %v, want [c3]", refs)
	}
}

// Many volumes used at once end as a sequential run would leave them;
// run with -race.
func TestConcurrentUse(t *testing.T) {
	f := newFixture(t)
	const vols, ids = 8, 4
	var wg sync.WaitGroup
	for i := range vols {
		name := fmt.Sprintf("v%d", i)
		wg.Go(func() {
			if err := f.d.Create(&volume.CreateRequest{Name: name}); err != nil {
				t.Error(err)
				return
			}
			var inner sync.WaitGroup
			for j := range ids {
				id := fmt.Sprintf("c%d", j)
				inner.Go(func() {
					for range 5 {
						if _, err := f.d.Mount(&volume.MountRequest{Name: name, ID: id}); err != nil {
							t.Error(err)
						}
						if _, err := f.d.Get(&volume.GetRequest{Name: name}); err != nil {
							t.Error(err)
						}
						if err := f.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
							t.Error(err)
						}
					}
				})
			}
			inner.Wait()
			if i%2 == 0 {
				if err := f.d.Remove(&volume.RemoveRequest{Name: name}); err != nil {
					t.Error(err)
				}
			}
		})
		wg.Go(func() {
			for range 20 {
				if _, err := f.d.List(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	f.restart(t)
	names, _ := listed(f.d)
	if want := []string{"v1", "v3", "v5", "v7"}; !slices.Equal(names, want) {
		t.Fatalf("listed %v, want %v", names, want)
	}
	for _, n := range names {
		if refs := f.d.volume(n).Mounts; len(refs) != 0 {
			t.Errorf("%s holds %v", n, refs)
		}
		if got := f.mnt.stack[f.mp(n)]; got != 0 {
			t.Errorf("%s mounted %d times", n, got)
		}
	}
}
