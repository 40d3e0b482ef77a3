package broadcast

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// poller tells which parked clients have something to read: one epoll
// instance for the whole server, in which a parked reader arms its
// connection's descriptor for one event (EPOLLONESHOT; rawIO.armIn). The
// descriptor stays in Go's own poller as well; the two do not interfere,
// as a parked reader has no read waiting there. The epoll instance itself
// waits in Go's poller, so that run blocks no thread and close ends it.
type poller struct {
	epfd   int
	f      *os.File // epfd, registered in Go's poller
	closed atomic.Bool
}

// pollEvents are the events a parked reader waits for: data, the peer's
// end (EPOLLRDHUP); errors and hang-ups are always reported.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newPoller() (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll instance: %w", err)
	}
	return &poller{epfd: fd, f: os.NewFile(uintptr(fd), "epoll")}, nil
}

// pollBatch is the most events one wait returns.
const pollBatch = 128

// run calls ready with the ids of clients that have something to read,
// until the poller is closed.
func (p *poller) run(ready func(ids []uint64)) error {
	raw, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var evs [pollBatch]unix.EpollEvent
	ids := make([]uint64, 0, pollBatch)
	for {
		var n int
		var werr error
		err := raw.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), evs[:], 0)
			if errors.Is(werr, unix.EINTR) {
				n, werr = 0, nil
				return true
			}
			return n > 0 || werr != nil // none ready: wait in Go's poller
		})
		if p.closed.Load() {
			return nil // the error says "use of closed file", but is no os.ErrClosed
		}
		if err == nil {
			err = werr
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		ids = ids[:0]
		for _, ev := range evs[:n] {
			ids = append(ids, uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32)
		}
		ready(ids)
	}
}

// close ends run. No reader may arm after it.
func (p *poller) close() error {
	p.closed.Store(true)
	return p.f.Close()
}
