package fusekeep

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Client is the worker's side: it hands descriptors to the holder and
// takes back those a previous worker handed it.
type Client struct {
	conn int

	mu   sync.Mutex
	held map[string]held // kept by a previous worker, not yet taken
}

type held struct {
	state []byte
	files []*os.File
}

// Connect returns the client of the holder that started this process, with
// what the holder kept from the previous worker. It names this process
// WorkerName so it can be told from the holder in a process list.
func Connect() (*Client, error) {
	v := os.Getenv(FDEnv)
	if v == "" {
		return nil, errors.New("fusekeep: not started by the holder")
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("fusekeep: bad %s=%q", FDEnv, v)
	}
	// The descriptor came without close-on-exec; nothing this process
	// starts may hold the holder's socket.
	unix.CloseOnExec(fd)
	os.Unsetenv(FDEnv)
	//nolint:errcheck // the name is for people reading ps; a kernel that refuses it changes nothing else
	os.WriteFile("/proc/self/comm", []byte(WorkerName), 0)
	return NewClient(fd)
}

// NewClient returns the client on conn, one end of a SOCK_SEQPACKET pair
// whose other end a Store serves, and asks what it holds.
func NewClient(conn int) (*Client, error) {
	c := &Client{conn: conn, held: map[string]held{}}
	if err := send(conn, message{op: opList}); err != nil {
		return nil, fmt.Errorf("fusekeep: asking the holder what it keeps: %w", err)
	}
	for {
		m, err := recv(conn)
		if err != nil {
			c.closeHeld()
			return nil, fmt.Errorf("fusekeep: reading what the holder keeps: %w", err)
		}
		if m.op == opEnd {
			return c, nil
		}
		if m.op != opHeld {
			closeFDs(m.fds)
			continue
		}
		h := held{state: m.state}
		for _, fd := range m.fds {
			h.files = append(h.files, os.NewFile(uintptr(fd), m.name))
		}
		c.held[m.name] = h
	}
}

// Keep hands dups of files to the holder under name, with state to give
// back with them, replacing what it held under that name. The holder has
// them once Keep returns, even if this process dies right after.
func (c *Client) Keep(name string, state []byte, files ...*os.File) error {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	err := send(c.conn, message{op: opKeep, name: name, state: state, fds: fds})
	// The files must not be closed (finalized) before the message
	// carried their descriptors.
	runtime.KeepAlive(files)
	if err != nil {
		return fmt.Errorf("fusekeep: handing %s to the holder: %w", name, err)
	}
	return nil
}

// Holds reports whether a previous worker left something under name that
// nobody took yet.
func (c *Client) Holds(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.held[name]
	return ok
}

// Take returns what a previous worker kept under name, once: the files
// are this process's own copies (the holder keeps its own until Drop).
func (c *Client) Take(name string) (state []byte, files []*os.File, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.held[name]
	if !ok {
		return nil, nil, false
	}
	delete(c.held, name)
	return h.state, h.files, true
}

// Drop makes the holder close what it keeps under name; what this process
// took stays open.
func (c *Client) Drop(name string) error {
	c.mu.Lock()
	if h, ok := c.held[name]; ok {
		closeFiles(h.files)
		delete(c.held, name)
	}
	c.mu.Unlock()
	if err := send(c.conn, message{op: opDrop, name: name}); err != nil {
		return fmt.Errorf("fusekeep: telling the holder to close %s: %w", name, err)
	}
	return nil
}

// Unclaimed lists the names a previous worker kept that nobody took.
func (c *Client) Unclaimed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.held))
	for n := range c.held {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (c *Client) closeHeld() {
	for _, h := range c.held {
		closeFiles(h.files)
	}
	c.held = nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
