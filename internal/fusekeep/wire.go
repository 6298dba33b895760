package fusekeep

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The holder and the worker talk over a SOCK_SEQPACKET socket pair, one
// message per request, descriptors riding along as SCM_RIGHTS. A message
// is an operation byte, a name, a NUL, then opaque state:
//
//	keep  'K' name \0 state   + the descriptors to hold under name
//	drop  'D' name
//	list  'L'                  the holder answers with one 'H' message per
//	held  'H' name \0 state   name it holds (+ its descriptors), then
//	end   'E'
//
// A message queued by a worker that dies right after is still read: the
// holder drains a worker's socket before it starts the next one.
const (
	opKeep = 'K'
	opDrop = 'D'
	opList = 'L'
	opHeld = 'H'
	opEnd  = 'E'
)

const (
	// maxMessage bounds a message: a path and a few hundred bytes of
	// state.
	maxMessage = 64 << 10
	// maxFiles bounds the descriptors kept under one name.
	maxFiles = 8
)

type message struct {
	op    byte
	name  string
	state []byte
	fds   []int
}

func send(fd int, m message) error {
	b := make([]byte, 0, 2+len(m.name)+len(m.state))
	b = append(b, m.op)
	b = append(b, m.name...)
	b = append(b, 0)
	b = append(b, m.state...)
	if len(b) > maxMessage || len(m.fds) > maxFiles {
		return fmt.Errorf("fusekeep: message for %q too large", m.name)
	}
	var oob []byte
	if len(m.fds) > 0 {
		oob = unix.UnixRights(m.fds...)
	}
	for {
		err := unix.Sendmsg(fd, b, oob, nil, 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// recv reads one message; io.EOF-like end of the peer is (message{},
// errClosed). Received descriptors are close-on-exec.
func recv(fd int) (message, error) {
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*maxFiles))
	var n, oobn, flags int
	var err error
	for {
		n, oobn, flags, _, err = unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return message{}, err
	}
	var fds []int
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return message{}, fmt.Errorf("fusekeep: %w", err)
		}
		for i := range cmsgs {
			got, err := unix.ParseUnixRights(&cmsgs[i])
			if err == nil {
				fds = append(fds, got...)
			}
		}
	}
	if n == 0 && oobn == 0 {
		return message{}, errClosed
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n == 0 {
		closeFDs(fds)
		return message{}, errors.New("fusekeep: truncated message")
	}
	name, state, _ := bytes.Cut(buf[1:n], []byte{0})
	return message{op: buf[0], name: string(name), state: bytes.Clone(state), fds: fds}, nil
}

var errClosed = errors.New("fusekeep: peer closed")

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
