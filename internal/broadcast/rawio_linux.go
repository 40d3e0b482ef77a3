package broadcast

import (
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawIO is the working state of one reader pass or writer run: a write's
// buffers and answers, and what a plain TCP client's non-blocking reads,
// writes and arming in the poller need. These go
// through syscall.RawConn, which takes a callback; a callback made for
// each call costs allocations (itself and every variable it shares), so
// rawIO binds its callbacks once and the server reuses rawIOs from a
// pool: waking an idle client then allocates next to nothing.
type rawIO struct {
	bufs [3][]byte // a write's buffers (net.Buffers.WriteTo consumes its slice)
	acks []byte    // answers taken for a write

	// The callbacks' arguments and results.
	p     []byte   // read into
	iov   [][]byte // write from
	block bool     // read: wait in Go's poller rather than return EAGAIN
	epfd  int      // arm: the poller
	ev    unix.EpollEvent
	n     int
	err   error

	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
	armFn   func(fd uintptr)
}

func newRawIO() *rawIO {
	r := &rawIO{}
	r.readFn, r.writeFn, r.armFn = r.read, r.write, r.arm
	return r
}

// getRawIO takes a rawIO from the server's pool.
func (s *Server) getRawIO() *rawIO { return s.rawIOs.Get().(*rawIO) }

// putRawIO returns r to the server's pool, without the last write's
// buffers: a pointer into the log would keep its chunks alive.
func (s *Server) putRawIO(r *rawIO) {
	r.bufs = [3][]byte{}
	s.rawIOs.Put(r)
}

func (r *rawIO) read(fd uintptr) bool {
	for {
		r.n, r.err = syscall.Read(int(fd), r.p)
		if r.err != syscall.EINTR {
			return !r.block || r.err != syscall.EAGAIN
		}
	}
}

func (r *rawIO) write(fd uintptr) bool {
	for {
		r.n, r.err = unix.Writev(int(fd), r.iov)
		if r.err != unix.EINTR {
			return true
		}
	}
}

func (r *rawIO) arm(fd uintptr) {
	r.err = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_MOD, int(fd), &r.ev)
	if errors.Is(r.err, unix.ENOENT) {
		r.err = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, int(fd), &r.ev)
	}
}

// readRaw reads once from raw into p. Without block it returns
// syscall.EAGAIN rather than wait; with block it waits in Go's poller.
func (r *rawIO) readRaw(raw syscall.RawConn, p []byte, block bool) (int, error) {
	r.p, r.block = p, block
	err := raw.Read(r.readFn)
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.err != nil:
		return 0, r.err
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// writeNow writes bufs to raw without waiting, and returns what the
// socket did not take.
func (r *rawIO) writeNow(raw syscall.RawConn, bufs net.Buffers) (net.Buffers, error) {
	r.iov = bufs
	err := raw.Write(r.writeFn)
	r.iov = nil
	if err != nil {
		return nil, err
	}
	n := r.n
	if r.err == unix.EAGAIN {
		n, r.err = 0, nil
	}
	if r.err != nil {
		return nil, r.err
	}
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs, nil
}

// armIn waits for one event on raw's connection in the epoll instance
// epfd (EPOLLONESHOT), reported with id. The descriptor is held for the
// call, so it cannot be closed and reused meanwhile; an event armed before
// a close is never reported, as closing the descriptor takes it out of
// the epoll instance.
func (r *rawIO) armIn(epfd int, raw syscall.RawConn, id uint64) error {
	r.epfd = epfd
	r.ev = unix.EpollEvent{Events: pollEvents, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := raw.Control(r.armFn); err != nil {
		return err
	}
	return r.err
}
