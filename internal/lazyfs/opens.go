package lazyfs

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel decides, per inode, how its open files are read: all through
// the page cache or all passed through to one backing file; an open that
// does not fit what the inode's other open files do fails with EIO
// (fs/fuse/iomode.c). The open files outlive this process when its FUSE
// connection is kept, so the next process must know them: every open file
// is a record in a table the keeper holds with the connection (a memfd),
// written before the OPEN is answered and cleared once its RELEASE is
// handled. A crash at any point leaves either a record the kernel has no
// file for (its OPEN is resent and finds it by the request's unique ID,
// or, past that, it only ever makes the inode use the page cache) or
// nothing to undo.

// openKind is how the kernel reads an open file.
type openKind uint32

const (
	openCached      openKind = 1 // through the page cache (and our READs)
	openPassthrough openKind = 2 // passed through to a backing file
)

// record is one open file, as laid out in the table's memory.
type record struct {
	fh      uint64
	unique  uint64 // the OPEN request's, without the resend bit
	backing int32  // the backing ID of a passthrough open
	kind    openKind
	// node is the inode's node ID; 0 marks a free slot. Written last
	// when a record is made and first when it is cleared, so a record
	// cut short by a crash is free.
	node uint32
	_    uint32
}

// tableSlots bounds the files open at once on one mount; the table's
// memory is sparse, so only the slots used cost anything. Slot 0 is the
// header.
const tableSlots = 1 << 17

// header is slot 0: how far records have ever been written, so a new
// process reads only those pages.
type header struct {
	magic uint64
	used  uint64
	_     [2]uint64
}

const tableMagic = 0x63617267_6f70656e // "cargopen"

// inodeOpens is what the kernel's files of one inode are: how many of
// each kind, and the backing ID the passthrough ones share.
type inodeOpens struct {
	cached, passthrough int
	backing             int32
}

// openTable holds the records. Its maps are rebuilt from the memory when
// a new process takes the connection over.
type openTable struct {
	mu       sync.Mutex
	mem      []byte
	hdr      *header
	recs     []record
	used     int   // slots below used may be in use; above are free
	free     []int // free slots below used
	byFH     map[uint64]int
	byUnique map[uint64]int
	inodes   map[uint32]*inodeOpens
	nextFH   uint64
}

const recordSize = int(unsafe.Sizeof(record{}))

// newTableFile makes the memory a kept table lives in.
func newTableFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("cargo-lazyfs-opens", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("lazyfs: creating the table of open files: %w", err)
	}
	f := os.NewFile(uintptr(fd), "cargo-lazyfs-opens")
	if err := f.Truncate(int64(tableSlots * recordSize)); err != nil {
		f.Close()
		return nil, fmt.Errorf("lazyfs: sizing the table of open files: %w", err)
	}
	return f, nil
}

// openOpenTable maps the table in f (shared with the keeper, so it
// survives this process), or anonymous memory when f is nil, and indexes
// the records already there.
func openOpenTable(f *os.File) (*openTable, error) {
	size := tableSlots * recordSize
	var mem []byte
	var err error
	if f != nil {
		mem, err = unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	} else {
		mem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	}
	if err != nil {
		return nil, fmt.Errorf("lazyfs: mapping the table of open files: %w", err)
	}
	t := &openTable{
		mem:      mem,
		hdr:      (*header)(unsafe.Pointer(&mem[0])),
		recs:     unsafe.Slice((*record)(unsafe.Pointer(&mem[0])), tableSlots),
		byFH:     map[uint64]int{},
		byUnique: map[uint64]int{},
		inodes:   map[uint32]*inodeOpens{},
	}
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, errors.Join(fmt.Errorf("lazyfs: %w", err), unix.Munmap(mem))
	}
	// File handles of different processes never meet: each starts at a
	// random point of a 63-bit space.
	t.nextFH = binary.LittleEndian.Uint64(seed[:]) >> 1
	t.used = 1
	if t.hdr.magic == tableMagic {
		t.used = int(min(atomic.LoadUint64(&t.hdr.used), tableSlots))
	}
	t.hdr.magic = tableMagic
	for i := 1; i < t.used; i++ {
		if atomic.LoadUint32(&t.recs[i].node) == 0 {
			t.free = append(t.free, i)
		} else {
			t.index(i)
		}
	}
	return t, nil
}

func (t *openTable) index(slot int) {
	r := &t.recs[slot]
	t.byFH[r.fh] = slot
	t.byUnique[r.unique] = slot
	in := t.inodes[r.node]
	if in == nil {
		in = &inodeOpens{}
		t.inodes[r.node] = in
	}
	switch r.kind {
	case openPassthrough:
		in.passthrough++
		in.backing = r.backing
	default:
		in.cached++
	}
}

// inode returns what the kernel's files of node are. Called with mu held.
func (t *openTable) inode(node uint32) inodeOpens {
	if in := t.inodes[node]; in != nil {
		return *in
	}
	return inodeOpens{}
}

// add records an open file of node and returns its file handle. Called
// with mu held.
func (t *openTable) add(node uint32, unique uint64, kind openKind, backing int32) (uint64, error) {
	slot := -1
	if n := len(t.free); n > 0 {
		slot, t.free = t.free[n-1], t.free[:n-1]
	} else if t.used < len(t.recs) {
		slot = t.used
		t.used++
		atomic.StoreUint64(&t.hdr.used, uint64(t.used))
	}
	if slot < 0 {
		return 0, fmt.Errorf("lazyfs: %d files open on one mount: %w", len(t.recs)-1, unix.ENFILE)
	}
	fh := t.newFH()
	r := &t.recs[slot]
	r.fh, r.unique, r.kind, r.backing = fh, unique, kind, backing
	atomic.StoreUint32(&r.node, node)
	t.index(slot)
	return fh, nil
}

func (t *openTable) newFH() uint64 {
	for {
		t.nextFH++
		if _, taken := t.byFH[t.nextFH]; !taken && t.nextFH != 0 {
			return t.nextFH
		}
	}
}

// byOpen finds the record an earlier process made for the OPEN request
// unique before it died without answering. Called with mu held.
func (t *openTable) byOpen(unique uint64) (record, bool) {
	slot, ok := t.byUnique[unique]
	if !ok {
		return record{}, false
	}
	return t.recs[slot], true
}

// lookup finds the open file fh. Called with mu held.
func (t *openTable) lookup(fh uint64) (record, bool) {
	slot, ok := t.byFH[fh]
	if !ok {
		return record{}, false
	}
	return t.recs[slot], true
}

// remove clears the record of fh. Called with mu held.
func (t *openTable) remove(fh uint64) {
	slot, ok := t.byFH[fh]
	if !ok {
		return
	}
	r := &t.recs[slot]
	node := r.node
	atomic.StoreUint32(&r.node, 0)
	delete(t.byFH, fh)
	if s, ok := t.byUnique[r.unique]; ok && s == slot {
		delete(t.byUnique, r.unique)
	}
	t.free = append(t.free, slot)
	in := t.inodes[node]
	if r.kind == openPassthrough {
		in.passthrough--
	} else {
		in.cached--
	}
	if in.cached == 0 && in.passthrough == 0 {
		delete(t.inodes, node)
	}
}

// close unmaps the table.
func (t *openTable) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mem == nil {
		return nil
	}
	err := unix.Munmap(t.mem)
	t.mem, t.hdr, t.recs = nil, nil, nil
	return err
}
