// Package harness runs tests against real Docker engines: it brings up
// several engines on this machine, each a "host" in its own network and
// mount namespace (tests/hosts.sh does the system work), and gives tests a
// handle on each.
//
// A test package starts its hosts once in TestMain and shares them:
//
//	var env *harness.Env
//	func TestMain(m *testing.M) { harness.Main(m, harness.Options{Prefix: "cgvol", Hosts: 2}, &env) }
package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Options says what a test package needs.
type Options struct {
	// Prefix names the package's hosts, namespaces and state directory
	// (/var/tmp/PREFIX); distinct per package, 1-8 of [a-z0-9].
	// CARGO_TEST_PREFIX overrides it, so that two runs of one package
	// can share a machine.
	Prefix string
	// Hosts is how many engines to start.
	Hosts int
	// Registry also starts a local registry at 198.18.0.60:5000.
	Registry bool
	// CRIU gives every engine a working criu, so that it can checkpoint
	// and restore containers: the directory CARGO_CRIU_PATH names, or
	// else the one tests/engines.sh criu fetches (Debian forky's).
	CRIU bool
	// Engines gives hosts engines of their own, host I the I-th: "" for
	// the one CARGO_ENGINE_PATH names (or the machine's), "machine" for
	// the machine's, or a suite tests/engines.sh fetches ("trixie",
	// "forky"). With CARGO_CONTAINERD_STORE=1 the engines that have it
	// run the containerd image store; the machine's Engine 20.10 has not.
	Engines []string
}

// Env is a running set of hosts.
type Env struct {
	Prefix       string
	Base         string
	DockerConfig string
	// Image is a small busybox image present on every host.
	Image    string
	Registry string
	// CRIUPath is the directory of the criu the engines run, first on
	// their PATH; empty when they have none but the machine's.
	CRIUPath string
	Hosts    []*Host
	// Top is the repository's top directory; Build its build output.
	Top, Build string
}

// Host is one engine.
type Host struct {
	Name       string // h1, h2, ...
	Context    string // docker context name
	DockerHost string // unix:// address of the engine
	Addr       string // IP address on the test network
	env        *Env
}

// Main starts the hosts, runs the package's tests and tears everything
// down, also when interrupted. It never returns.
func Main(m *testing.M, opts Options, out **Env) {
	os.Exit(run(m, opts, out))
}

func run(m *testing.M, opts Options, out **Env) int {
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "these tests start real Docker engines in namespaces and must run as root (make test does)")
		return 1
	}
	top, err := topDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if p := os.Getenv("CARGO_TEST_PREFIX"); p != "" {
		opts.Prefix = p
	}
	env := &Env{Prefix: opts.Prefix, Top: top, Build: os.Getenv("CARGO_BUILD")}
	if env.Build == "" {
		env.Build = filepath.Join(top, "build")
	}
	// Tear down on interrupt too: a stale engine or mount breaks the next run.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "harness: %v: tearing hosts down\n", s)
		env.down()
		os.Exit(2)
	}()
	defer env.down()
	if err := env.up(opts); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	*out = env
	return m.Run()
}

func topDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the repository")
	}
	return filepath.Dir(filepath.Dir(filepath.Dir(file))), nil
}

func (e *Env) script(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(e.Top, "tests", "hosts.sh"), args...)
	cmd.Env = append(os.Environ(), "CARGO_BUILD="+e.Build)
	if e.CRIUPath != "" {
		cmd.Env = append(cmd.Env, "CARGO_CRIU_PATH="+e.CRIUPath)
	}
	return cmd
}

// fetchCRIU returns the directory of a criu that works on this machine:
// CARGO_CRIU_PATH, or tests/engines.sh's cached fetch of Debian forky's.
func (e *Env) fetchCRIU(ctx context.Context) (string, error) {
	if dir := os.Getenv("CARGO_CRIU_PATH"); dir != "" {
		return dir, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(e.Top, "tests", "engines.sh"), "criu")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("fetching criu with tests/engines.sh criu: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// fetchEngine returns the PATH directories of the named engine: see
// Options.Engines.
func (e *Env) fetchEngine(ctx context.Context, name string) (string, error) {
	switch name {
	case "", "machine":
		return "", nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(e.Top, "tests", "engines.sh"), name)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("fetching engine %s with tests/engines.sh %s: %w", name, name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func (e *Env) up(opts Options) error {
	args := []string{"up", "-p", opts.Prefix, "-n", strconv.Itoa(opts.Hosts)}
	if opts.Registry {
		args = append(args, "--registry")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if opts.CRIU {
		dir, err := e.fetchCRIU(ctx)
		if err != nil {
			return err
		}
		e.CRIUPath = dir
	}
	cmd := e.script(ctx, args...)
	for i, name := range opts.Engines {
		dir, err := e.fetchEngine(ctx, name)
		if err != nil {
			return err
		}
		if name != "" {
			cmd.Env = append(cmd.Env, fmt.Sprintf("CARGO_H%d_ENGINE_PATH=%s", i+1, dir))
		}
		if name == "machine" {
			// 20.10 has no containerd image store.
			cmd.Env = append(cmd.Env, fmt.Sprintf("CARGO_H%d_CONTAINERD_STORE=0", i+1))
		}
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bringing hosts up: %w", err)
	}
	return e.load()
}

func (e *Env) load() error {
	e.Base = filepath.Join("/var/tmp", e.Prefix)
	b, err := os.ReadFile(filepath.Join(e.Base, "env"))
	if err != nil {
		return err
	}
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = v
		}
	}
	e.DockerConfig, e.Image, e.Registry = kv["DOCKER_CONFIG"], kv["CARGO_IMAGE"], kv["CARGO_REGISTRY"]
	e.CRIUPath = kv["CARGO_CRIU_PATH"]
	n, _ := strconv.Atoi(kv["CARGO_HOSTS"])
	for i := 1; i <= n; i++ {
		p := fmt.Sprintf("CARGO_H%d_", i)
		e.Hosts = append(e.Hosts, &Host{
			Name: fmt.Sprintf("h%d", i), Context: kv[p+"CONTEXT"],
			DockerHost: kv[p+"HOST"], Addr: kv[p+"ADDR"], env: e,
		})
	}
	return nil
}

func (e *Env) down() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := e.script(ctx, "down", "-p", e.Prefix)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	_ = cmd.Run()
}

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
	Err            error
}

// Combined is what a user would have seen on a terminal.
func (r Result) Combined() string { return r.Stdout + r.Stderr }

// Docker runs the docker CLI against env's config: args should select the
// engine (--context) unless the command needs none.
func (e *Env) Docker(ctx context.Context, args ...string) Result {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+e.DockerConfig, "DOCKER_CLI_HINTS=false")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Err: err}
}

// Docker runs the docker CLI against this host.
func (h *Host) Docker(ctx context.Context, args ...string) Result {
	return h.env.Docker(ctx, append([]string{"--context", h.Context}, args...)...)
}

// MustDocker runs the docker CLI against this host and fails the test on
// error; it returns trimmed stdout.
func (h *Host) MustDocker(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := h.Docker(ctx, args...)
	if r.Err != nil {
		t.Fatalf("%s: %v", h.Name, r.Err)
	}
	return strings.TrimSpace(r.Stdout)
}

// Exec runs a command inside the host's network and mount namespaces, as
// the engine sees the machine.
func (h *Host) Exec(ctx context.Context, args ...string) Result {
	cmd := h.env.script(ctx, append([]string{"exec", "-p", h.env.Prefix, h.Name}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %s: %w: %s", h.Name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Err: err}
}

// RestartEngine stops the host's dockerd cleanly and starts it again with
// the same state, as `systemctl restart docker` would.
func (h *Host) RestartEngine(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := h.env.script(ctx, "restart", "-p", h.env.Prefix, h.Name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restarting engine %s: %v\n%s", h.Name, err, out)
	}
}

// DataRoot is the host's /var/lib/docker as seen from the machine (and
// from the test), BASE/hI/docker: its containers/ID/checkpoints holds the
// checkpoints the engine can restore from.
func (h *Host) DataRoot() string {
	return filepath.Join(h.env.Base, h.Name, "docker")
}

// EngineLog returns the host's dockerd log, which holds the plugin's too.
func (h *Host) EngineLog() string {
	b, _ := os.ReadFile(filepath.Join(h.env.Base, h.Name, "dockerd.log"))
	return string(b)
}

// PluginLogOnFailure logs, if the test fails, the cargo plugin's lines
// of each host's engine log since now: what the plugins did during the
// test, to tell why.
func (e *Env) PluginLogOnFailure(t testing.TB) {
	start := map[string]int{}
	for _, h := range e.Hosts {
		start[h.Name] = len(h.EngineLog())
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, h := range e.Hosts {
			log := h.EngineLog()
			if n := start[h.Name]; n <= len(log) {
				log = log[n:]
			}
			var lines []string
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "plugin=") {
					lines = append(lines, l)
				}
			}
			if len(lines) > 200 {
				lines = lines[len(lines)-200:]
			}
			t.Logf("cargo plugin on %s during the test:\n%s", h.Name, strings.Join(lines, "\n"))
		}
	})
}

// Eventually polls cond until it returns nil or timeout passes, then fails
// the test with cond's last error. For waiting on a state, never a sleep.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Processes returns the PIDs of this host's processes (those in its
// network namespace) whose command name starts with comm.
func (h *Host) Processes(t testing.TB, comm string) []int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", h.env.Prefix+"-"+h.Name).Output()
	if err != nil {
		t.Fatalf("listing processes of %s: %v", h.Name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(c)), comm) {
			pids = append(pids, pid)
		}
	}
	return pids
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// Unique gives a test its own name for a volume or container on h, and
// removes whatever carries that name when the test ends.
func (h *Host) Unique(t *testing.T, suffix string) string {
	t.Helper()
	n := "t-" + strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-") + "-" + suffix
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		h.Docker(ctx, "rm", "-f", n)
		h.Docker(ctx, "volume", "rm", "-f", n)
	})
	return n
}

// Run runs a throwaway container and returns its trimmed output.
func (h *Host) Run(t testing.TB, args ...string) string {
	t.Helper()
	return h.MustDocker(t, append([]string{"run", "--rm"}, args...)...)
}

// VolumeStatus returns the Status the volume's driver reports.
func (h *Host) VolumeStatus(t testing.TB, vol string) map[string]any {
	t.Helper()
	var st map[string]any
	out := h.MustDocker(t, "volume", "inspect", "-f", "{{json .Status}}", vol)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status of %s: %v: %s", vol, err, out)
	}
	return st
}

// StopEngine stops the host's dockerd for good, as if the host were gone.
func (h *Host) StopEngine(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := h.env.script(ctx, "stop", "-p", h.env.Prefix, h.Name).CombinedOutput(); err != nil {
		t.Fatalf("stopping engine %s: %v\n%s", h.Name, err, out)
	}
}

// StartEngine starts the host's dockerd again after StopEngine.
func (h *Host) StartEngine(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := h.env.script(ctx, "start", "-p", h.env.Prefix, h.Name).CombinedOutput(); err != nil {
		t.Fatalf("starting engine %s: %v\n%s", h.Name, err, out)
	}
}

// WithoutCRIU restarts the host's engine with no criu on its PATH, as on
// a host where CRIU is not installed, until the test ends.
func (h *Host) WithoutCRIU(t testing.TB) {
	t.Helper()
	// A host with its own engine keeps it: start from its own path, and
	// put that back afterwards.
	own := filepath.Join(h.env.Base, h.Name, "path")
	prev, ownErr := os.ReadFile(own)
	b := prev
	if ownErr != nil {
		var err error
		if b, err = os.ReadFile(filepath.Join(h.env.Base, "path")); err != nil {
			t.Fatal(err)
		}
	}
	var keep []string
	for _, dir := range strings.Split(strings.TrimSpace(string(b)), ":") {
		if dir != "" && dir != h.env.CRIUPath {
			keep = append(keep, dir)
		}
	}
	if err := os.WriteFile(own, []byte(strings.Join(keep, ":")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.RestartEngine(t)
	t.Cleanup(func() {
		err := os.Remove(own)
		if ownErr == nil {
			err = os.WriteFile(own, prev, 0o644)
		}
		if err != nil {
			t.Error(err)
		}
		h.RestartEngine(t)
	})
}

// ContainerdStore tells whether the host's engine keeps its images in
// the containerd image store rather than a classic graphdriver.
func (h *Host) ContainerdStore(t testing.TB) bool {
	t.Helper()
	return strings.Contains(h.MustDocker(t, "info", "-f", "{{json .DriverStatus}}"), "io.containerd.snapshotter")
}

// Version is the host's engine version, like 28.5.2.
func (h *Host) Version(t testing.TB) string {
	t.Helper()
	return h.MustDocker(t, "version", "-f", "{{.Server.Version}}")
}

// WithoutExperimental restarts the host's engine with experimental
// features off, as engines run by default, until the test ends.
func (h *Host) WithoutExperimental(t testing.TB) {
	t.Helper()
	mark := filepath.Join(h.env.Base, h.Name, "no-experimental")
	if err := os.WriteFile(mark, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.RestartEngine(t)
	t.Cleanup(func() {
		if err := os.Remove(mark); err != nil {
			t.Error(err)
		}
		h.RestartEngine(t)
	})
}

// Throttle limits what h sends, so that copies last long enough to act
// in the middle of them; the limit goes when the test ends.
func (h *Host) Throttle(t testing.TB, rate string) {
	t.Helper()
	if r := h.Exec(Ctx(t), "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "256k", "latency", "200ms"); r.Err != nil {
		t.Fatal(r.Err)
	}
	t.Cleanup(func() { h.Exec(context.Background(), "tc", "qdisc", "del", "dev", "eth0", "root") })
}

// Command prepares a command to run inside the host's namespaces, for
// the caller to start and stop (a packet capture, say).
func (h *Host) Command(args ...string) *exec.Cmd {
	return h.env.script(context.Background(), append([]string{"exec", "-p", h.env.Prefix, h.Name}, args...)...)
}

// Ctx is a context for one command of a test, cancelled when the test ends.
func Ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c
}
