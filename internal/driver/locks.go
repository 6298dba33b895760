package driver

import "sync"

// volumeLocks is a mutex per volume name, made on first use and dropped
// when nobody holds or waits for it, so names seen once do not pile up.
type volumeLocks struct {
	mu    sync.Mutex
	locks map[string]*volumeLock
}

type volumeLock struct {
	mu sync.Mutex
	// users counts the holder and the waiters; guarded by volumeLocks.mu.
	users int
}

// lock waits for name's lock and returns its release.
func (l *volumeLocks) lock(name string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*volumeLock{}
	}
	vl := l.locks[name]
	if vl == nil {
		vl = &volumeLock{}
		l.locks[name] = vl
	}
	vl.users++
	l.mu.Unlock()

	vl.mu.Lock()
	return sync.OnceFunc(func() {
		vl.mu.Unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		if vl.users--; vl.users == 0 {
			delete(l.locks, name)
		}
	})
}

// lockPair takes the locks of two volumes (an export volume and the volume
// it exports) in name order: whoever needs both takes them in the same
// order, so two such operations cannot wait for each other.
func (l *volumeLocks) lockPair(a, b string) (unlock func()) {
	if a == b {
		return l.lock(a)
	}
	if b < a {
		a, b = b, a
	}
	ua := l.lock(a)
	ub := l.lock(b)
	return func() {
		ub()
		ua()
	}
}
