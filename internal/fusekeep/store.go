package fusekeep

import (
	"sync"

	"golang.org/x/sys/unix"
)

// Store is the holder's table: the descriptors and state workers asked it
// to keep, by name. It only holds them; it never reads or writes them.
type Store struct {
	mu      sync.Mutex
	entries map[string]entry
	order   []string // names in the order first kept
}

type entry struct {
	state []byte
	fds   []int
}

// NewStore returns an empty table.
func NewStore() *Store {
	return &Store{entries: map[string]entry{}}
}

// Serve answers one worker on conn (its end of a SOCK_SEQPACKET pair)
// until the worker closes it or dies, then closes conn. What the worker
// queued before it went is applied.
func (s *Store) Serve(conn int) {
	defer unix.Close(conn)
	for {
		m, err := recv(conn)
		if err != nil {
			return
		}
		switch m.op {
		case opKeep:
			s.keep(m.name, m.state, m.fds)
		case opDrop:
			closeFDs(m.fds)
			s.drop(m.name)
		case opList:
			closeFDs(m.fds)
			if err := s.list(conn); err != nil {
				return
			}
		default:
			closeFDs(m.fds)
		}
	}
}

func (s *Store) keep(name string, state []byte, fds []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.entries[name]; ok {
		closeFDs(old.fds)
	} else {
		s.order = append(s.order, name)
	}
	s.entries[name] = entry{state: state, fds: fds}
}

func (s *Store) drop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.entries[name]
	if !ok {
		return
	}
	closeFDs(old.fds)
	delete(s.entries, name)
	for i, n := range s.order {
		if n == name {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

func (s *Store) list(conn int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.order {
		e := s.entries[n]
		if err := send(conn, message{op: opHeld, name: n, state: e.state, fds: e.fds}); err != nil {
			return err
		}
	}
	return send(conn, message{op: opEnd})
}

// Len is how many names the store holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Close closes every descriptor held.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		closeFDs(e.fds)
	}
	s.entries, s.order = map[string]entry{}, nil
}
