package lazyfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// The FUSE connection is made here rather than by go-fuse, so that this
// process has its descriptor to hand to the keeper: /dev/fuse is opened,
// mount(2)ed at the directory, and given to go-fuse through its
// "/dev/fd/N" mount point, which serves a descriptor it did not open.
//
// go-fuse reads INIT first thing, and the kernel sends INIT once per
// connection. To serve a connection taken over, go-fuse is given a socket
// holding the INIT the kernel sent the first time (kept with the
// connection), answers it to the socket, negotiating what it negotiated
// then, and the FUSE descriptor then takes the socket's place under the
// same number before anything else is read.

// mountOptions are go-fuse's settings for a mount; a connection taken
// over must be served with the ones it was made with.
func (f *FS) mountOptions(passthrough bool) *fuse.MountOptions {
	mo := &fuse.MountOptions{
		// The engine and containers run as other users than us.
		AllowOther: true,
		FsName:     "cargo",
		Name:       "cargo",
		// Allow READs of up to 1 MiB (the kernel's limit); how large
		// they are is up to readahead, see ReadAheadKB.
		MaxWrite: 1 << 20,
		// Replies carry bytes (ReadResultData), never a file to splice
		// from. With splicing on, go-fuse still sizes a pipe and writes
		// each reply's header into it before noticing, which costs time
		// and, for 1 MiB replies (more than a pipe holds), logs a
		// complaint per reply.
		DisableSplice: true,
		// Symlink targets never change either.
		EnableSymlinkCaching: true,
		Debug:                f.opts.Debug,
		Logger:               f.logger,
	}
	if !passthrough {
		// Without passthrough the kernel gives this mount stacking depth
		// 0, which leaves room for stacking more than the one overlay.
		mo.DisabledCapabilities = fuse.CAP_PASSTHROUGH
	}
	return mo
}

// mountData is mount(2)'s data for a FUSE connection on fd, what
// fusermount would pass. default_permissions: the kernel checks access
// against the modes and owners we report, as a local filesystem would, so
// container users get the same answers as on the source host.
func mountData(fd int, mo *fuse.MountOptions) string {
	return fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d,max_read=%d,default_permissions,allow_other",
		fd, os.Geteuid(), os.Getegid(), mo.MaxWrite)
}

// mount makes a new connection at f.dir and serves it.
func (f *FS) mount() (err error) {
	detachDead(f.dir)
	mo := f.mountOptions(f.opts.Passthrough)
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lazyfs: opening /dev/fuse: %w", err)
	}
	// Read-only at the mount level too, so the VFS refuses writes
	// before they reach us. nosuid and nodev are what fusermount would
	// set; they only govern using this mount directly: exec and device
	// opens through the overlay on top are checked against the
	// overlay's mount.
	flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	if err := unix.Mount(mo.FsName, f.dir, "fuse."+mo.Name, flags, mountData(fd, mo)); err != nil {
		unix.Close(fd)
		return fmt.Errorf("lazyfs: mounting at %s: %w", f.dir, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.detach())
		}
	}()
	dev, err := mountedDev(f.dir)
	if err != nil {
		unix.Close(fd)
		return err
	}
	var table *os.File
	if f.opts.Keeper != nil {
		if table, err = newTableFile(); err != nil {
			unix.Close(fd)
			return err
		}
		defer table.Close()
	}
	if f.opens, err = openOpenTable(table); err != nil {
		unix.Close(fd)
		return err
	}
	// go-fuse owns fd from here and answers the kernel's INIT on it.
	f.server, err = fuse.NewServer(&rawFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), fs: f},
		fmt.Sprintf("/dev/fd/%d", fd), mo)
	if err != nil {
		unix.Close(fd)
		return errors.Join(fmt.Errorf("lazyfs: mounting at %s: %w", f.dir, err), f.opens.close())
	}
	f.passthrough.Store(f.opts.Passthrough && f.PassthroughOffered())
	go f.server.Serve()
	if k := f.opts.Keeper; k != nil {
		if err := f.keep(k, fd, dev, table); err != nil {
			return f.abort(err)
		}
	}
	if err := f.server.WaitMount(); err != nil {
		return f.abort(err)
	}
	if err := pollHack(f.dir); err != nil {
		return f.abort(err)
	}
	if f.opts.ReadAheadKB > 0 {
		if err := setReadAhead(dev, f.opts.ReadAheadKB); err != nil {
			return f.abort(err)
		}
	}
	return nil
}

// abort undoes a mount that is being served.
func (f *FS) abort(err error) error {
	if uerr := f.Unmount(); uerr != nil {
		return errors.Join(err, uerr)
	}
	return err
}

// detach lazily unmounts f.dir.
func (f *FS) detach() error {
	if err := unix.Unmount(f.dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("lazyfs: unmounting %s: %w", f.dir, err)
	}
	return nil
}

// detachDead unmounts dead FUSE connections at dir: one a crashed process
// mounted without handing it to the keeper, which nothing can use.
func detachDead(dir string) {
	for range 8 {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); !errors.Is(err, unix.ENOTCONN) {
			return
		}
		if unix.Unmount(dir, unix.MNT_DETACH) != nil {
			return
		}
	}
}

// mountedDev returns the device number of the FUSE mount at dir, from
// the mount table (stat would ask the server, which may not be serving).
func mountedDev(dir string) (uint64, error) {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		return 0, fmt.Errorf("lazyfs: reading the mount table: %w", err)
	}
	// The last one listed is the one on top.
	for i := len(ms) - 1; i >= 0; i-- {
		if strings.HasPrefix(ms[i].FSType, "fuse.") {
			return unix.Mkdev(uint32(ms[i].Major), uint32(ms[i].Minor)), nil
		}
	}
	return 0, fmt.Errorf("lazyfs: no FUSE mount at %s", dir)
}

// connState is what a kept connection needs besides its descriptors.
type connState struct {
	passthrough bool
	dev         uint64 // the mount's device number, to find it again
	init        fuse.InitIn
}

const stateMagic = "cargo-lazyfs-1\x00"

func (s connState) encode() []byte {
	var b bytes.Buffer
	b.WriteString(stateMagic)
	var pt byte
	if s.passthrough {
		pt = 1
	}
	b.WriteByte(pt)
	binary.Write(&b, binary.LittleEndian, s.dev) //nolint:errcheck // a bytes.Buffer takes everything
	b.Write(unsafe.Slice((*byte)(unsafe.Pointer(&s.init)), unsafe.Sizeof(s.init)))
	return b.Bytes()
}

func decodeState(b []byte) (connState, error) {
	var s connState
	rest, ok := bytes.CutPrefix(b, []byte(stateMagic))
	if !ok || len(rest) != 1+8+int(unsafe.Sizeof(s.init)) {
		return s, errors.New("lazyfs: the kept connection's state is not this version's")
	}
	s.passthrough = rest[0] == 1
	s.dev = binary.LittleEndian.Uint64(rest[1:9])
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&s.init)), unsafe.Sizeof(s.init)), rest[9:])
	return s, nil
}

// keep hands the connection and the table of open files to the keeper.
func (f *FS) keep(k Keeper, fd int, dev uint64, table *os.File) error {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lazyfs: %w", err)
	}
	conn := os.NewFile(uintptr(dup), "/dev/fuse")
	defer conn.Close()
	st := connState{passthrough: f.opts.Passthrough, dev: dev, init: *f.server.KernelSettings()}
	return k.Keep(f.dir, st.encode(), conn, table)
}

// takeOver serves the connection the keeper kept for f.dir, if it is
// still alive and mounted there; ok=false (the keeper told to let it go)
// when it is not, for Mount to make a new one. A connection alive but no
// longer mounted at f.dir (still under an overlay) is served until it
// ends, beside the new one.
func (f *FS) takeOver() (ok bool, err error) {
	k := f.opts.Keeper
	b, files, _ := k.Take(f.dir)
	defer func() {
		for _, file := range files {
			file.Close()
		}
	}()
	st, err := decodeState(b)
	if err != nil || len(files) != 2 || !alive(files[0]) {
		f.logf("the kept connection cannot be served (%v); mounting again", err)
		return false, k.Drop(f.dir)
	}
	dev, err := mountedDev(f.dir)
	if err != nil || dev != st.dev {
		// Detached: keep serving whoever still uses it, from this
		// process only: the keeper's name is for the new mount.
		old := &FS{dir: f.dir, tree: f.tree, backend: f.backend, opts: f.opts, logger: f.logger}
		old.opts.Keeper = nil
		if err := old.serveKept(st, files); err != nil {
			f.logf("serving a kept connection no longer mounted: %v", err)
			return false, k.Drop(f.dir)
		}
		go func() {
			old.server.Wait()
			if err := old.release(); err != nil {
				f.logf("releasing a kept connection: %v", err)
			}
		}()
		return false, nil
	}
	if err := f.serveKept(st, files); err != nil {
		return false, err
	}
	f.resumed = true
	return true, nil
}

// serveKept builds a server on the kept connection and asks the kernel
// for the requests the dead process had taken.
func (f *FS) serveKept(st connState, files []*os.File) error {
	var err error
	if f.opens, err = openOpenTable(files[1]); err != nil {
		return err
	}
	f.server, err = resumeServer(&rawFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), fs: f},
		files[0], st.init, f.mountOptions(st.passthrough))
	if err != nil {
		return errors.Join(err, f.opens.close())
	}
	f.passthrough.Store(st.passthrough && f.PassthroughOffered())
	go f.server.Serve()
	if err := notifyResend(files[0]); err != nil {
		// The kernel (before 6.9) does not know it: requests the dead
		// process had taken stay unanswered, the rest are served.
		f.logf("asking the kernel to send again what the previous process had taken: %v", err)
	}
	return nil
}

// alive reports whether the kernel still has the connection: a poll of a
// connection gone (unmounted, aborted) reports an error.
func alive(conn *os.File) bool {
	fds := []unix.PollFd{{Fd: int32(conn.Fd()), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, 0); err != nil {
		return false
	}
	return fds[0].Revents&unix.POLLERR == 0
}

// resumeServer makes a go-fuse server on conn, an initialized connection,
// by replaying init (see the top of this file). conn is not consumed.
func resumeServer(fsys fuse.RawFileSystem, conn *os.File, init fuse.InitIn, mo *fuse.MountOptions) (*fuse.Server, error) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lazyfs: %w", err)
	}
	defer unix.Close(sp[1])
	const opInit = 26 // FUSE_INIT
	init.Length = uint32(unsafe.Sizeof(init))
	init.Opcode = opInit
	init.Unique = 0
	if _, err := unix.Write(sp[1], unsafe.Slice((*byte)(unsafe.Pointer(&init)), unsafe.Sizeof(init))); err != nil {
		unix.Close(sp[0])
		return nil, fmt.Errorf("lazyfs: %w", err)
	}
	srv, err := fuse.NewServer(fsys, fmt.Sprintf("/dev/fd/%d", sp[0]), mo)
	if err != nil {
		unix.Close(sp[0])
		return nil, fmt.Errorf("lazyfs: serving the kept connection: %w", err)
	}
	// go-fuse holds sp[0] in a blocking os.File, outside the runtime's
	// poller, and reads nothing more until Serve: the number can change
	// files under it.
	if err := unix.Dup3(int(conn.Fd()), sp[0], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("lazyfs: %w", err)
	}
	return srv, nil
}

// notifyResend sends FUSE_NOTIFY_RESEND: the kernel queues again every
// request a server read and did not answer.
func notifyResend(conn *os.File) error {
	const notifyResend = 7 // FUSE_NOTIFY_RESEND
	var h [16]byte         // struct fuse_out_header, unique 0: a notification
	binary.LittleEndian.PutUint32(h[0:], uint32(len(h)))
	binary.LittleEndian.PutUint32(h[4:], notifyResend)
	_, err := unix.Write(int(conn.Fd()), h[:])
	return err
}

// pollHack makes the kernel send one POLL, which go-fuse answers ENOSYS,
// so the kernel never polls this connection again: Go's runtime registers
// every file it opens with epoll, and a POLL that comes from the serving
// process itself can wait for a thread none is left to run (go-fuse does
// this for the mounts it makes, not for "/dev/fd/N" ones). The kernel
// remembers it for the connection, across take-overs.
func pollHack(dir string) error {
	// go-fuse answers this name at the root itself.
	const name = ".go-fuse-epoll-hack"
	fd, err := unix.Open(dir+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lazyfs: %w", err)
	}
	defer unix.Close(fd)
	//nolint:errcheck // only the POLL it causes matters
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return nil
}
