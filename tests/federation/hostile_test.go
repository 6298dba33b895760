package federation_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cargo-migrate/cargo/internal/manifest"
	"github.com/cargo-migrate/cargo/internal/peer"
	"github.com/cargo-migrate/cargo/internal/replica"
	"github.com/cargo-migrate/cargo/tests/harness"
)

// hostilePeer is a source host's peer service that answers as a broken or
// hostile one would: it speaks TLS with a certificate of its own and hands
// out a ticket naming it, then serves a manifest and files as the case
// wants, honestly unless a hook says otherwise.
type hostilePeer struct {
	manifest []byte         // served as is at /manifest
	content  map[int][]byte // the files' content by index
	// files, if set, answers GET files/{index} in the honest handler's
	// place; batch, POST batch.
	files func(w http.ResponseWriter, r *http.Request, content []byte)
	batch func(w http.ResponseWriter, files []int)

	ticket   string
	token    string
	served   chan struct{} // closed once the manifest was sent whole
	once     sync.Once
	complete atomic.Value // the target's report, once it told
}

// start serves p in host h's network namespace, at h's address on a port
// of its own, until the test ends.
func (p *hostilePeer) start(t *testing.T, h *harness.Host) {
	t.Helper()
	id, err := peer.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := peer.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	p.token, p.served = token, make(chan struct{})
	var l net.Listener
	err = inNamespace(netnsPath(h), unix.CLONE_NEWNET, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(h.Addr, "0"))
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", h.Name, err)
	}
	srv := &http.Server{Handler: p, TLSConfig: id.TLSConfig(), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.ServeTLS(l, "", "") }() // until Close, at the test's end
	t.Cleanup(func() { srv.Close() })
	p.ticket = peer.Ticket{Addr: l.Addr().String(), ExportID: "hostile", Token: token, Fingerprint: id.Fingerprint()}.String()
}

func (p *hostilePeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+p.token {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	route := strings.TrimPrefix(r.URL.Path, "/v1/exports/hostile/")
	switch {
	case route == "manifest":
		if _, err := w.Write(p.manifest); err == nil {
			p.once.Do(func() { close(p.served) })
		}
	case strings.HasPrefix(route, "files/"):
		i, err := strconv.Atoi(strings.TrimPrefix(route, "files/"))
		content, ok := p.content[i]
		if err != nil || !ok {
			http.Error(w, "no such file", http.StatusNotFound)
			return
		}
		if p.files != nil {
			p.files(w, r, content)
			return
		}
		serveRange(w, r, content)
	case route == "batch":
		var req struct{ Files []int }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if p.batch != nil {
			p.batch(w, req.Files)
			return
		}
		for _, i := range req.Files {
			writeFrame(w, i, uint64(len(p.content[i])))
			_, _ = w.Write(p.content[i])
		}
	case route == "complete":
		var req struct{ Report string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		p.complete.Store(req.Report)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// askedRange is the one range of a "Range: bytes=A-B" or "bytes=A-"
// header, within size; ok is false without one.
func askedRange(r *http.Request, size int) (first, end int, ok bool) {
	spec, found := strings.CutPrefix(r.Header.Get("Range"), "bytes=")
	a, b, dash := strings.Cut(spec, "-")
	first, err := strconv.Atoi(a)
	if !found || !dash || err != nil || first >= size {
		return 0, 0, false
	}
	end = size
	if b != "" {
		last, err := strconv.Atoi(b)
		if err != nil {
			return 0, 0, false
		}
		end = min(last+1, size)
	}
	return first, end, true
}

// serveRange answers as the real source does.
func serveRange(w http.ResponseWriter, r *http.Request, content []byte) {
	first, end, ok := askedRange(r, len(content))
	if !ok {
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		_, _ = w.Write(content)
		return
	}
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, end-1, len(content)))
	w.Header().Set("Content-Length", strconv.Itoa(end-first))
	w.WriteHeader(http.StatusPartialContent)
	_, _ = w.Write(content[first:end])
}

// writeFrame writes a batch frame's header (internal/peer's protocol.go).
func writeFrame(w io.Writer, index int, size uint64) {
	var hdr [13]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(index))
	binary.BigEndian.PutUint64(hdr[5:13], size)
	_, _ = w.Write(hdr[:])
}

// garbage writes bytes no file holds until the client stops reading, or
// limit bytes.
func garbage(w io.Writer, limit int) {
	b := bytes.Repeat([]byte{0xEE}, 64<<10)
	for n := 0; n < limit; n += len(b) {
		if _, err := w.Write(b); err != nil {
			return
		}
	}
}

// tree is a manifest of files at the root, with the content of each.
func tree(t *testing.T, files map[string][]byte) ([]byte, map[int][]byte) {
	t.Helper()
	mt := time.Now().UnixNano()
	m := &manifest.Manifest{Entries: []manifest.Entry{{Path: ".", Type: manifest.TypeDir, Mode: 0o755, MtimeNs: mt, LinkTo: manifest.NoLink, Nlink: 1}}}
	content := map[int][]byte{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		i := len(m.Entries)
		m.Entries = append(m.Entries, manifest.Entry{Index: i, Path: name, Type: manifest.TypeFile, Mode: 0o644,
			Size: int64(len(files[name])), MtimeNs: mt, LinkTo: manifest.NoLink, Nlink: 1})
		content[i] = files[name]
	}
	if err := m.Validate(manifest.DefaultLimits); err != nil {
		t.Fatalf("the test's own manifest: %v", err)
	}
	var b bytes.Buffer
	if err := manifest.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), content
}

// gzipLines is a manifest stream of the lines write writes.
func gzipLines(t *testing.T, write func(w *bufio.Writer)) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(zw, 1<<20)
	write(bw)
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const rootLine = `{"i":0,"p":".","t":1,"m":493,"u":0,"g":0,"mt":0,"h":-1,"n":1}` + "\n"

// xattrBomb is a small stream (about 12 MB of gzip) of files whose xattrs,
// each within the limit of one entry, add up past the limit of all: about
// 1 GiB of names, as much memory as the target grants a whole manifest's
// xattrs, then more.
func xattrBomb(t *testing.T) []byte {
	perEntry := manifest.DefaultLimits.MaxXattrBytes / 256                           // names of 255 bytes, empty values
	cost := int64(perEntry)*(255+manifest.XattrOverhead) + manifest.XattrMapOverhead // what the budget charges an entry
	n := int(manifest.DefaultLimits.MaxTotalXattrBytes/cost) + 16
	pad := strings.Repeat("x", 255-len("user.")-5)
	// A bufio.Writer keeps its first error for Flush, which gzipLines checks.
	return gzipLines(t, func(w *bufio.Writer) {
		fmt.Fprintf(w, "{\"v\":1,\"n\":%d}\n%s", n+1, rootLine)
		for i := 1; i <= n; i++ {
			fmt.Fprintf(w, `{"i":%d,"p":"f%d","t":2,"m":420,"u":0,"g":0,"mt":0,"h":-1,"n":1,"x":{`, i, i)
			for j := range perEntry {
				if j > 0 {
					_ = w.WriteByte(',')
				}
				fmt.Fprintf(w, `"user.%s%05d":""`, pad, j)
			}
			_, _ = w.WriteString("}}\n")
		}
	})
}

func netnsPath(h *harness.Host) string { return "/var/run/netns/" + env.Prefix + "-" + h.Name }

// randomBytes is n bytes that look like data, the same for every seed.
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// A source host answers the target as a broken or hostile one would: a
// manifest far over the limits, range answers longer than asked, a batch
// frame larger than its file; and a flood of connections that never
// finish TLS hits the target's own peer port. Each time the target's
// plugin stays up, answers, serves its other volumes, and what the user
// sees names the cause.
func TestHostilePeer(t *testing.T) {
	hostileHost, dst := env.Hosts[0], env.Hosts[1]
	env.PluginLogOnFailure(t)
	pid := pluginPID(t, dst)
	other := dst.Unique(t, "other")
	dst.MustDocker(t, "volume", "create", "-d", "cargo", other)
	dst.Run(t, "-v", other+":/data", env.Image, "sh", "-c", "echo kept > /data/marker")
	// stillServes checks the target's plugin after each case.
	stillServes := func(t *testing.T) {
		t.Helper()
		if now := pluginPID(t, dst); now != pid {
			t.Fatalf("the target's plugin restarted: PID %d, was %d", now, pid)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if r := dst.Docker(ctx, "volume", "ls", "-q", "--filter", "driver=cargo:latest"); r.Err != nil || !strings.Contains(r.Stdout, other) {
			t.Fatalf("docker volume ls on the target after %v: %v %q", time.Since(start), r.Err, r.Stdout)
		}
		if got := dst.Run(t, "-v", other+":/data", env.Image, "sh", "-c", "cat /data/marker && echo more >> /data/marker"); !strings.HasPrefix(got, "kept") {
			t.Fatalf("the target's other volume reads %q", got)
		}
	}

	big := randomBytes(replica.LargeFile, 1) // a large file: copied and read by ranges
	cases := []struct {
		name string
		peer func(t *testing.T) *hostilePeer
		// hold holds the background copy from the start, so that reads
		// of the large file go to the source.
		hold bool
		// check judges the outcome, given the create's result.
		check func(t *testing.T, p *hostilePeer, vol string, create harness.Result)
	}{
		{
			name: "manifest over the entry limit",
			peer: func(t *testing.T) *hostilePeer {
				return &hostilePeer{manifest: gzipLines(t, func(w *bufio.Writer) {
					fmt.Fprintf(w, "{\"v\":1,\"n\":%d}\n%s", manifest.DefaultLimits.MaxEntries+1, rootLine)
				})}
			},
			check: refused(dst, fmt.Sprintf("over the limit of %d", manifest.DefaultLimits.MaxEntries), "(MaxEntries)"),
		},
		{
			name:  "manifest over the xattr limit",
			peer:  func(t *testing.T) *hostilePeer { return &hostilePeer{manifest: xattrBomb(t)} },
			check: refused(dst, fmt.Sprintf("over the limit of %d", manifest.DefaultLimits.MaxTotalXattrBytes), "(MaxTotalXattrBytes)"),
		},
		{
			name: "range body longer than its range",
			peer: func(t *testing.T) *hostilePeer {
				p := &hostilePeer{}
				p.manifest, p.content = tree(t, map[string][]byte{"big": big, "small": []byte("small\n")})
				p.files = func(w http.ResponseWriter, r *http.Request, content []byte) {
					first, end, ok := askedRange(r, len(content))
					if !ok {
						first, end = 0, len(content)
					}
					// No Content-Length: the body says how long it is.
					w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, end-1, len(content)))
					w.WriteHeader(http.StatusPartialContent)
					_, _ = w.Write(content[first:end])
					garbage(w, 4<<20)
				}
				return p
			},
			hold:  true,
			check: copiedRight(dst, big),
		},
		{
			name: "whole file without length, endless",
			peer: func(t *testing.T) *hostilePeer {
				p := &hostilePeer{}
				p.manifest, p.content = tree(t, map[string][]byte{"big": big, "small": []byte("small\n")})
				p.files = func(w http.ResponseWriter, _ *http.Request, content []byte) {
					w.WriteHeader(http.StatusOK)
					_, _ = w.Write(content)
					garbage(w, 1<<30)
				}
				return p
			},
			hold:  true,
			check: copiedRight(dst, big),
		},
		{
			name: "batch frame larger than the manifest says",
			peer: func(t *testing.T) *hostilePeer {
				p := &hostilePeer{}
				p.manifest, p.content = tree(t, map[string][]byte{"small": []byte("small\n")})
				p.batch = func(w http.ResponseWriter, files []int) {
					writeFrame(w, files[0], 1<<40)
					garbage(w, 1<<20)
				}
				return p
			},
			check: func(t *testing.T, _ *hostilePeer, vol string, create harness.Result) {
				if create.Err != nil {
					t.Fatal(create.Err)
				}
				st := waitState(t, dst, vol, "stalled", time.Minute)
				if msg := fmt.Sprint(st["error"]); !strings.Contains(msg, `the source sent 1099511627776 bytes for "small", its manifest said 6`) {
					t.Fatalf("the stalled copy's error does not name the cause: %q", msg)
				}
				// A read asks for the bytes by range instead, which this
				// source answers honestly.
				if got := dst.Run(t, "-v", vol+":/data", env.Image, "cat", "/data/small"); got != "small" {
					t.Fatalf("reading the file: %q", got)
				}
				if st := dst.VolumeStatus(t, vol); st["state"] != "stalled" || copied(st) != 0 {
					t.Fatalf("status after the read: %v", st)
				}
			},
		},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.peer(t)
			p.start(t, hostileHost)
			vol := dst.Unique(t, "v")
			if tt.hold {
				// Released before the volume is removed: its removal waits
				// for the fetches the pause holds.
				armFailpoints(t, dst, "replica.chunk.before-log=pause")
			}
			created := make(chan harness.Result, 1)
			go func() {
				start := time.Now()
				r := dst.Docker(harness.Ctx(t), "volume", "create", "-d", "cargo", "-o", "from="+p.ticket, vol)
				t.Logf("docker volume create answered after %v", time.Since(start).Round(time.Millisecond))
				created <- r
			}()
			// The plugin works on the manifest (or has already refused it)
			// while the rest of the host is served.
			select {
			case <-p.served:
			case r := <-created:
				created <- r
			}
			stillServes(t)
			tt.check(t, p, vol, <-created)
			stillServes(t)
		})
	}
	t.Run("connection flood", func(t *testing.T) {
		floodPeerPort(t, env.Hosts[2], dst, pid)
		stillServes(t)
	})
}

// refused expects the create to fail, leaving nothing behind, with a
// message that says the source's manifest is over a limit and names it.
func refused(dst *harness.Host, want ...string) func(t *testing.T, p *hostilePeer, vol string, create harness.Result) {
	return func(t *testing.T, _ *hostilePeer, vol string, create harness.Result) {
		t.Helper()
		for _, w := range append([]string{"the source's manifest", "broken or hostile"}, want...) {
			if create.Err == nil || !strings.Contains(create.Combined(), w) {
				t.Fatalf("docker volume create: %v %q, want an error saying %q", create.Err, create.Combined(), w)
			}
		}
		if r := dst.Docker(harness.Ctx(t), "volume", "inspect", vol); r.Err == nil {
			t.Fatalf("the refused volume exists: %s", r.Stdout)
		}
		if dir := filepath.Join(stateDir(dst), "volumes", vol); !gone(dir) {
			t.Fatalf("the refused volume left %s", dir)
		}
	}
}

// copiedRight expects the copy, reads and background alike, to take the
// bytes asked for and nothing more: the large file reads as the source's
// while it is copied (the background held meanwhile) and after.
func copiedRight(dst *harness.Host, big []byte) func(t *testing.T, p *hostilePeer, vol string, create harness.Result) {
	return func(t *testing.T, p *hostilePeer, vol string, create harness.Result) {
		t.Helper()
		if create.Err != nil {
			t.Fatal(create.Err)
		}
		read := "stat -c %s /data/big; md5sum < /data/big | cut -d' ' -f1; cat /data/small"
		want := fmt.Sprintf("%d\n%s\nsmall", len(big), md5hex(string(big)))
		if got := dst.Run(t, "-v", vol+":/data:ro", env.Image, "sh", "-c", read); got != want {
			t.Fatalf("reading the large file during the copy: %q, want %q", got, want)
		}
		if st := dst.VolumeStatus(t, vol); copied(st) != int64(len("small\n")) {
			t.Fatalf("the large file was local before the reads: %v", st)
		}
		armFailpoints(t, dst, "")
		waitState(t, dst, vol, "complete", time.Minute)
		if got := dst.Run(t, "-v", vol+":/data:ro", env.Image, "sh", "-c", read); got != want {
			t.Fatalf("the copied large file: %q, want %q", got, want)
		}
		if r, _ := p.complete.Load().(string); r != fmt.Sprintf("2 files, %d bytes", len(big)+len("small\n")) {
			t.Fatalf("the target's report: %q", r)
		}
	}
}

// floodPeerPort opens, from host from, far more TCP connections to dst's
// peer port than it admits, from several addresses, none of which ever
// sends a byte of TLS, and opens each again once dst closes it. It checks
// that dst admits no more than its bounds, in all and per address, and
// closes the admitted ones soon; and that meanwhile a real volume moves to
// dst from h1 and is read there.
func floodPeerPort(t *testing.T, from, dst *harness.Host, pid int) {
	t.Helper()
	maxConns := min(peer.DefaultMaxConns, int(openFiles(t, pid)/2))
	perAddr := min(peer.DefaultMaxConnsPerAddr, maxConns)
	// Extra addresses of from, each below the bound per address and
	// together over the total; from's own address over the bound per
	// address.
	per := max(perAddr*15/16, 1)
	extra := maxConns/per + 2
	if extra > 25 {
		t.Fatalf("the bounds (%d, %d per address) take more addresses than the test network has", maxConns, perAddr)
	}
	slots := map[string]int{from.Addr: perAddr + perAddr/2}
	for i := range extra {
		a := fmt.Sprintf("198.18.0.%d", 30+i)
		if r := from.Exec(harness.Ctx(t), "ip", "addr", "add", a+"/26", "dev", "eth0"); r.Err != nil {
			t.Fatal(r.Err)
		}
		t.Cleanup(func() { from.Exec(context.Background(), "ip", "addr", "del", a+"/26", "dev", "eth0") })
		slots[a] = per
	}
	logStart := len(dst.EngineLog())
	f := startFlood(t, from, net.JoinHostPort(dst.Addr, "7450"), slots)

	// The first connection of every slot: admitted ones are closed when
	// their handshake times out, the others at once.
	harness.Eventually(t, 30*time.Second, "the target closes every connection of the flood's first wave", func() error {
		if open := f.firstOpen(); open > 0 {
			return fmt.Errorf("%d still open", open)
		}
		return nil
	})
	held, heldBy, refusedBy := f.firstWave()
	t.Logf("first wave: %d connections held until their handshake timed out (bounds %d, %d per address), refused at once by address %v",
		held, maxConns, perAddr, refusedBy)
	if held > maxConns {
		t.Errorf("the target held %d connections at once, over its bound of %d", held, maxConns)
	}
	for a, n := range heldBy {
		if n > perAddr {
			t.Errorf("the target held %d connections from %s, over its bound of %d per address", n, a, perAddr)
		}
	}
	if refusedBy[from.Addr] < slots[from.Addr]-perAddr {
		t.Errorf("from %s, %d of %d connections were refused at once, want at least %d", from.Addr, refusedBy[from.Addr], slots[from.Addr], slots[from.Addr]-perAddr)
	}
	total := 0
	for _, n := range refusedBy {
		total += n
	}
	if total == 0 || held == 0 {
		t.Errorf("the flood did not reach the total bound: %d held, %d refused", held, total)
	}
	if slow := f.slowestClose(); slow > 15*time.Second {
		t.Errorf("an admitted connection that never began TLS stayed open %v", slow)
	}

	// The flood goes on while a real volume moves to the target.
	src := env.Hosts[0]
	vol, want := source(t, src, 1)
	federate(t, src, dst, vol)
	if got := dst.Run(t, "-v", vol+":/data:ro", env.Image, "cat", "/data/small/f1"); got != "small file 1" {
		t.Fatalf("reading the moved volume during the flood: %q", got)
	}
	waitState(t, dst, vol, "complete", time.Minute)
	sameListing(t, "the volume moved during the flood", listing(t, dst, vol), want)
	if d := f.dialed(); d <= len(f.slots) {
		t.Fatalf("the flood did not go on: %d connections for %d slots", d, len(f.slots))
	}
	if now := pluginPID(t, dst); now != pid {
		t.Fatalf("the target's plugin restarted during the flood: PID %d, was %d", now, pid)
	}
	f.stop()
	if log := dst.EngineLog()[logStart:]; !strings.Contains(log, "refusing peer connections over the connection limits") {
		t.Errorf("the target's log does not say it refused connections over its limits")
	}
}

// openFiles is the RLIMIT_NOFILE soft limit of process pid.
func openFiles(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			if n, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64); err == nil {
				return n
			}
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits", pid)
	return 0
}

// floodPace is the least time between two connections of one slot of a
// flood: enough to press the bounds without taking the machine's CPU.
const floodPace = 250 * time.Millisecond

// flood holds connections open to a peer port, one per slot, each from a
// given address; each that the server closes is opened again.
type flood struct {
	slots []string // the local address of each slot
	dials chan dialRequest
	done  chan struct{}
	wg    sync.WaitGroup
	count atomic.Int64

	mu    sync.Mutex
	first []firstConn // by slot
}

// firstConn is what became of a slot's first connection.
type firstConn struct {
	closed bool
	lived  time.Duration
}

type dialRequest struct {
	from string
	res  chan net.Conn
}

// startFlood opens slots[addr] connections from each address of host h to
// target, from h's network namespace, until the test ends or stop.
func startFlood(t *testing.T, h *harness.Host, target string, slots map[string]int) *flood {
	t.Helper()
	f := &flood{dials: make(chan dialRequest), done: make(chan struct{})}
	for _, a := range slices.Sorted(maps.Keys(slots)) {
		for range slots[a] {
			f.slots = append(f.slots, a)
		}
	}
	f.first = make([]firstConn, len(f.slots))
	// Dialers inside h's namespace: the sockets they make belong to it.
	errc := make(chan error, 8)
	for range cap(errc) {
		go func() {
			errc <- inNamespace(netnsPath(h), unix.CLONE_NEWNET, func() error {
				for {
					select {
					case req := <-f.dials:
						d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(req.from)}, Timeout: 5 * time.Second}
						c, err := d.Dial("tcp", target)
						if err != nil {
							c = nil
						}
						req.res <- c
					case <-f.done:
						return nil
					}
				}
			})
		}()
	}
	for i := range f.slots {
		f.wg.Add(1)
		go f.run(i)
	}
	t.Cleanup(func() {
		f.stop()
		for range cap(errc) {
			if err := <-errc; err != nil {
				t.Errorf("flood: %v", err)
			}
		}
	})
	return f
}

// run keeps slot i's connection open: dial, wait for the server to close
// it, and again, at most once per floodPace.
func (f *flood) run(i int) {
	defer f.wg.Done()
	for gen := 0; ; gen++ {
		began := time.Now()
		res := make(chan net.Conn, 1)
		select {
		case f.dials <- dialRequest{from: f.slots[i], res: res}:
		case <-f.done:
			return
		}
		var c net.Conn
		select {
		case c = <-res:
		case <-f.done:
			return
		}
		switch {
		case c != nil:
			f.count.Add(1)
			f.hold(i, gen, c)
		case gen == 0:
			f.mu.Lock()
			f.first[i] = firstConn{closed: true}
			f.mu.Unlock()
		}
		select {
		case <-time.After(floodPace - time.Since(began)):
		case <-f.done:
			return
		}
	}
}

// hold waits until the server closes c (or the flood stops), and notes
// how long a slot's first connection lived.
func (f *flood) hold(i, gen int, c net.Conn) {
	opened := time.Now()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-f.done:
			c.Close()
		case <-stopped:
		}
	}()
	var b [1]byte
	_, err := c.Read(b[:])
	close(stopped)
	c.Close()
	if gen == 0 && !errors.Is(err, net.ErrClosed) {
		f.mu.Lock()
		f.first[i] = firstConn{closed: true, lived: time.Since(opened)}
		f.mu.Unlock()
	}
}

// refusedWithin tells a connection closed over a bound (at once) from
// one admitted and closed when its handshake timed out.
const refusedWithin = time.Second

func (f *flood) firstOpen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.first {
		if !c.closed {
			n++
		}
	}
	return n
}

func (f *flood) firstWave() (held int, heldBy, refusedBy map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	heldBy, refusedBy = map[string]int{}, map[string]int{}
	for i, c := range f.first {
		if c.lived < refusedWithin {
			refusedBy[f.slots[i]]++
		} else {
			held++
			heldBy[f.slots[i]]++
		}
	}
	return held, heldBy, refusedBy
}

func (f *flood) slowestClose() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var d time.Duration
	for _, c := range f.first {
		d = max(d, c.lived)
	}
	return d
}

func (f *flood) dialed() int { return int(f.count.Load()) }

func (f *flood) stop() {
	select {
	case <-f.done:
	default:
		close(f.done)
	}
	f.wg.Wait()
}
