//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Enabled tells whether this build has failpoints.
const Enabled = true

var (
	mu       sync.Mutex
	fromEnv  map[string]action
	fromFile map[string]action
	filePath string
	fileMod  time.Time
	fileSize int64
	funcs    = map[string]func() error{}
	hits     = map[string]int{}
	// armed is false while nothing could be set, so a point costs one
	// atomic load.
	armed atomic.Bool
)

func init() {
	if spec := os.Getenv(Env); spec != "" {
		m, err := parse(spec)
		if err != nil {
			panic(fmt.Sprintf("%s: %v", Env, err))
		}
		fromEnv = m
	}
	filePath = os.Getenv(FileEnv)
	armed.Store(len(fromEnv) > 0 || filePath != "")
}

// UseFile makes the process read its points from path (re-read whenever
// it changes), unless CARGO_FAILPOINTS_FILE names another file. A daemon
// calls it with a path in its own state, where a test can write.
func UseFile(path string) {
	mu.Lock()
	defer mu.Unlock()
	if filePath == "" {
		filePath = path
		armed.Store(true)
	}
}

// Inject runs the action set for the point name.
func Inject(name string) error {
	if !armed.Load() {
		return nil
	}
	for {
		a, f := lookup(name)
		if f != nil {
			return f()
		}
		switch a.kind {
		case kindOff:
			return nil
		case kindError:
			return a.err(name)
		case kindPanic:
			panic(a.err(name))
		case kindKill:
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			// PID 1 of a PID namespace (a managed plugin) ignores its own
			// SIGKILL: end the process at once as the kernel would, with
			// no deferred work and the same exit status.
			syscall.Exit(128 + int(syscall.SIGKILL))
		case kindSleep:
			time.Sleep(a.sleep)
			return nil
		case kindPause:
			time.Sleep(20 * time.Millisecond)
			hitsUndo(name) // a pause counts once, however long it lasts
		}
	}
}

// lookup finds what the point does now and counts the hit.
func lookup(name string) (action, func() error) {
	mu.Lock()
	defer mu.Unlock()
	if f := funcs[name]; f != nil {
		return action{}, f
	}
	reloadFile()
	a, ok := fromFile[name]
	if !ok {
		a, ok = fromEnv[name]
	}
	if !ok {
		return action{}, nil
	}
	hits[name]++
	if a.count > 0 && hits[name] > a.count {
		return action{}, nil
	}
	return a, nil
}

func hitsUndo(name string) {
	mu.Lock()
	hits[name]--
	mu.Unlock()
}

// reloadFile re-reads CARGO_FAILPOINTS_FILE when it changed; a missing
// file sets nothing. Called with mu held.
func reloadFile() {
	path := filePath
	if path == "" {
		return
	}
	st, err := os.Stat(path)
	if err != nil {
		fromFile, fileMod, fileSize = nil, time.Time{}, 0
		return
	}
	if st.ModTime().Equal(fileMod) && st.Size() == fileSize && fromFile != nil {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	m, err := parse(string(b))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
		return
	}
	fromFile, fileMod, fileSize = m, st.ModTime(), st.Size()
	clear(hits)
}

// Set makes the point name do action (as in CARGO_FAILPOINTS) until the
// returned function is called.
func Set(name, spec string) func() {
	a, err := parseAction(spec)
	if err != nil {
		panic(err)
	}
	return SetFunc(name, func() error {
		switch a.kind {
		case kindError:
			return a.err(name)
		case kindPanic:
			panic(a.err(name))
		case kindSleep:
			time.Sleep(a.sleep)
		case kindOff:
		default:
			panic(fmt.Sprintf("failpoint.Set(%q, %q): kill and pause are for whole processes; use CARGO_FAILPOINTS", name, spec))
		}
		return nil
	})
}

// SetFunc makes the point name call f, and return what f returns, until
// the returned function is called. For unit tests: f may block, or look
// at the state of the code around the point.
func SetFunc(name string, f func() error) func() {
	mu.Lock()
	funcs[name] = f
	armed.Store(true)
	mu.Unlock()
	return func() {
		mu.Lock()
		delete(funcs, name)
		mu.Unlock()
	}
}
