package fusekeep

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary is also the holder and the worker of TestHold: the
// role is in the environment.
const roleEnv = "FUSEKEEP_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "holder":
		if InWorker() {
			os.Exit(testWorker())
		}
		os.Exit(Hold(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	}
	os.Exit(m.Run())
}

// pair returns a Store serving one end of a socket pair and the other end.
func pair(t *testing.T, s *Store) (conn int, served <-chan struct{}) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(p[0])
	}()
	return p[1], done
}

func memfd(t *testing.T, content string) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("fusekeep-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	return f
}

func readAll(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A worker's descriptors and state outlive it in the store, reach the next
// worker as working descriptors of the same open files, and go on Drop.
func TestStoreKeepsAcrossWorkers(t *testing.T) {
	s := NewStore()
	defer s.Close()

	conn, served := pair(t, s)
	c1, err := NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	if got := c1.Unclaimed(); len(got) != 0 {
		t.Fatalf("a new store holds %v", got)
	}
	a, b := memfd(t, "first"), memfd(t, "second")
	if err := c1.Keep("/run/view", []byte("state\x00with nul"), a, b); err != nil {
		t.Fatal(err)
	}
	replaced := memfd(t, "replaced")
	if err := c1.Keep("/run/other", nil, replaced); err != nil {
		t.Fatal(err)
	}
	if err := c1.Keep("/run/other", []byte("v2"), memfd(t, "other")); err != nil {
		t.Fatal(err)
	}
	if err := c1.Keep("/run/gone", nil, memfd(t, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := c1.Drop("/run/gone"); err != nil {
		t.Fatal(err)
	}
	// The worker dies: its own copies close, its socket too; what it
	// queued is still applied.
	a.Close()
	b.Close()
	unix.Close(conn)
	<-served

	conn2, _ := pair(t, s)
	c2, err := NewClient(conn2)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(conn2)
	if got, want := strings.Join(c2.Unclaimed(), " "), "/run/other /run/view"; got != want {
		t.Fatalf("kept %q, want %q", got, want)
	}
	if !c2.Holds("/run/view") || c2.Holds("/run/gone") {
		t.Errorf("Holds: view %v, gone %v", c2.Holds("/run/view"), c2.Holds("/run/gone"))
	}
	state, files, ok := c2.Take("/run/view")
	if !ok || string(state) != "state\x00with nul" || len(files) != 2 {
		t.Fatalf("Take: %q, %d files, %v", state, len(files), ok)
	}
	if got := readAll(t, files[0]) + " " + readAll(t, files[1]); got != "first second" {
		t.Errorf("kept files read %q", got)
	}
	// The same open file: a write through the taken copy shows in the
	// holder's, which the next worker gets.
	if _, err := files[0].WriteAt([]byte("FIRST"), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := c2.Take("/run/view"); ok {
		t.Error("a second Take of the same name succeeded")
	}
	state, files2, _ := c2.Take("/run/other")
	if string(state) != "v2" || readAll(t, files2[0]) != "other" {
		t.Errorf("replaced entry: %q %q", state, readAll(t, files2[0]))
	}
	if got := c2.Unclaimed(); len(got) != 0 {
		t.Errorf("unclaimed after taking all: %v", got)
	}

	conn3, _ := pair(t, s)
	c3, err := NewClient(conn3)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(conn3)
	_, files3, _ := c3.Take("/run/view")
	if got := readAll(t, files3[0]); got != "FIRST" {
		t.Errorf("third worker reads %q, want the second's write", got)
	}
	if err := c3.Drop("/run/view"); err != nil {
		t.Fatal(err)
	}
	if err := c3.Drop("/run/other"); err != nil {
		t.Fatal(err)
	}
	// Drop is applied in order with the next request.
	conn4, _ := pair(t, s)
	defer unix.Close(conn4)
	c4, err := NewClient(conn4)
	if err != nil {
		t.Fatal(err)
	}
	if got := c4.Unclaimed(); len(got) != 0 {
		t.Errorf("kept after Drop: %v", got)
	}
}

// testWorker is the worker of TestHold, its behaviour by generation: the
// first keeps a memfd and SIGKILLs itself; the second reports what it got
// back and waits for SIGTERM; "crash" workers exit at once.
func testWorker() int {
	report := os.Getenv("FUSEKEEP_TEST_REPORT")
	if os.Getenv("FUSEKEEP_TEST_CRASH") != "" {
		appendLine(report, "crash")
		return 3
	}
	sigs := make(chan os.Signal, 1)
	signalNotify(sigs)
	c, err := Connect()
	if err != nil {
		appendLine(report, "error "+err.Error())
		return 1
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	state, files, ok := c.Take("view")
	if !ok {
		fd, _ := unix.MemfdCreate("view", 0)
		f := os.NewFile(uintptr(fd), "view")
		if _, err := f.WriteString("kept by the first worker"); err != nil {
			appendLine(report, "error "+err.Error())
			return 1
		}
		if err := c.Keep("view", []byte("gen1"), f); err != nil {
			appendLine(report, "error "+err.Error())
			return 1
		}
		appendLine(report, fmt.Sprintf("first %d %s", os.Getpid(), strings.TrimSpace(string(comm))))
		if err := syscall.Kill(os.Getpid(), syscall.SIGKILL); err != nil {
			appendLine(report, "error "+err.Error())
			return 1
		}
		select {}
	}
	b := make([]byte, 64)
	n, _ := files[0].ReadAt(b, 0)
	appendLine(report, fmt.Sprintf("second %d %s %s %q", os.Getpid(), strings.TrimSpace(string(comm)), state, b[:n]))
	<-sigs
	return 7
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

func startHolder(t *testing.T, extraEnv ...string) (*exec.Cmd, string) {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{roleEnv + "=holder", "FUSEKEEP_TEST_REPORT=" + report}, extraEnv...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() }) //nolint:errcheck // it may be gone
	return cmd, report
}

func waitLines(t *testing.T, report string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(report)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) > 0 && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("report has %q, want %d lines", b, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The holder starts the worker again after a SIGKILL, hands it what the
// dead one kept, forwards SIGTERM, and exits with the worker's status.
func TestHold(t *testing.T) {
	cmd, report := startHolder(t)
	lines := waitLines(t, report, 2)
	var pid1, pid2 int
	var comm1, comm2, rest string
	if _, err := fmt.Sscanf(lines[0], "first %d %s", &pid1, &comm1); err != nil {
		t.Fatalf("%q: %v", lines[0], err)
	}
	if _, err := fmt.Sscanf(lines[1], "second %d %s", &pid2, &comm2); err != nil {
		t.Fatalf("%q: %v", lines[1], err)
	}
	rest = lines[1][strings.Index(lines[1], comm2)+len(comm2):]
	if pid1 == pid2 || pid1 == cmd.Process.Pid || pid2 == cmd.Process.Pid {
		t.Errorf("holder %d, workers %d and %d", cmd.Process.Pid, pid1, pid2)
	}
	if comm1 != WorkerName || comm2 != WorkerName {
		t.Errorf("worker command names %q %q, want %q", comm1, comm2, WorkerName)
	}
	if want := ` gen1 "kept by the first worker"`; rest != want {
		t.Errorf("second worker got %s, want %s", rest, want)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("holder exit: %v, want the worker's status 7", err)
	}
}

// A worker that keeps exiting at once makes the holder give up with its
// status, so the engine sees the plugin fail.
func TestHoldGivesUp(t *testing.T) {
	cmd, report := startHolder(t, "FUSEKEEP_TEST_CRASH=1")
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("holder exit: %v, want the worker's status 3", err)
	}
	if n := len(waitLines(t, report, 1)); n != maxFastExits {
		t.Errorf("%d workers started, want %d", n, maxFastExits)
	}
}

func signalNotify(ch chan os.Signal) { signal.Notify(ch, syscall.SIGTERM) }
