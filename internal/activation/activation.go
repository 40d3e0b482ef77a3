// Package activation picks up the descriptors that systemd passes to
// chattyd (socket activation), by their FileDescriptorName: "broadcast"
// (the TCP listener), "control" (the Unix control socket) and "feed" (a
// FIFO from ListenFIFO=).
package activation

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// The descriptor names chattyd understands.
const (
	NameBroadcast = "broadcast"
	NameControl   = "control"
	NameFeed      = "feed"
)

// Passed holds what systemd passed; any field may be nil.
type Passed struct {
	Broadcast net.Listener
	Control   net.Listener
	Feed      *os.File
	// feedHold duplicates the FIFO descriptor as passed (read-write), kept
	// open so that the FIFO always has a writer and Feed never reads
	// end-of-file when the last producer goes; 0 when none. A raw
	// descriptor, not an *os.File, so that no finalizer closes it.
	feedHold int
}

// Empty reports whether nothing was passed.
func (p Passed) Empty() bool {
	return p.Broadcast == nil && p.Control == nil && p.Feed == nil
}

// Close closes everything passed, for error paths.
func (p Passed) Close() {
	if p.Broadcast != nil {
		p.Broadcast.Close()
	}
	if p.Control != nil {
		p.Control.Close()
	}
	if p.Feed != nil {
		p.Feed.Close()
	}
	if p.feedHold > 0 {
		unix.Close(p.feedHold)
	}
}

// FromSystemd takes the passed descriptors from LISTEN_FDS and
// LISTEN_FDNAMES, and unsets those variables so that workers do not
// inherit them. Without them it returns an empty Passed.
func FromSystemd() (Passed, error) {
	return fromFiles(activation.Files(true))
}

func fromFiles(files []*os.File) (Passed, error) {
	var p Passed
	var errs []error
	for _, f := range files {
		name := f.Name()
		var err error
		switch name {
		case NameBroadcast:
			p.Broadcast, err = listener(f, name, "tcp", p.Broadcast)
		case NameControl:
			p.Control, err = listener(f, name, "unix", p.Control)
		case NameFeed:
			if p.Feed != nil {
				err = fmt.Errorf("systemd passed two descriptors named %q", name)
				break
			}
			p.Feed, p.feedHold, err = feedFile(f)
		default:
			err = fmt.Errorf("systemd passed a descriptor named %q; chattyd knows %q, %q and %q (set FileDescriptorName= in the .socket unit)", name, NameBroadcast, NameControl, NameFeed)
		}
		f.Close()
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		p.Close()
		return Passed{}, err
	}
	return p, nil
}

// listener turns a passed socket into a listener of the wanted network.
func listener(f *os.File, name, network string, prev net.Listener) (net.Listener, error) {
	if prev != nil {
		return nil, fmt.Errorf("systemd passed two descriptors named %q", name)
	}
	ln, err := net.FileListener(f) // dups f; the caller closes f
	if err != nil {
		return nil, fmt.Errorf("descriptor %q is not a listening socket: %w", name, err)
	}
	if got := ln.Addr().Network(); got != network {
		ln.Close()
		return nil, fmt.Errorf("descriptor %q is a %s socket, want %s", name, got, network)
	}
	return ln, nil
}

// feedFile checks that f is a FIFO and returns a non-blocking descriptor
// of it, so that the Go poller can interrupt a read at shutdown. It uses
// SyscallConn rather than f.Fd, which would switch f to blocking mode.
//
// The descriptor is a new open of the FIFO (through /proc/self/fd), not a
// duplicate: a duplicate shares its file status flags with systemd's
// descriptor and with every producer systemd hands the FIFO to
// (StandardOutput=fd:feed), and systemd clears O_NONBLOCK when it does
// that. A read would then block in the kernel where shutdown cannot
// interrupt it. Only when the FIFO cannot be opened again is it duplicated.
//
// It also returns a duplicate of f to keep open (see Passed.feedHold).
func feedFile(f *os.File) (*os.File, int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, 0, fmt.Errorf("descriptor %q: %w", NameFeed, err)
	}
	nfd, hold := -1, -1
	var opErr error
	err = rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if opErr = unix.Fstat(int(fd), &st); opErr != nil {
			return
		}
		if st.Mode&unix.S_IFMT != unix.S_IFIFO {
			opErr = fmt.Errorf("descriptor %q is not a FIFO (use ListenFIFO= in the .socket unit)", NameFeed)
			return
		}
		nfd, opErr = reopenFIFO(int(fd), st)
		if opErr == nil {
			hold, opErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
			return
		}
		if nfd, opErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); opErr != nil {
			return
		}
		opErr = unix.SetNonblock(nfd, true)
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		for _, fd := range []int{nfd, hold} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		return nil, 0, err
	}
	if hold < 0 {
		hold = 0 // the duplicate is the feed itself
	}
	return os.NewFile(uintptr(nfd), NameFeed), hold, nil
}

// reopenFIFO opens the FIFO behind fd again, for reading and non-blocking,
// and checks that it is the same FIFO.
func reopenFIFO(fd int, want unix.Stat_t) (int, error) {
	nfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(nfd, &st); err != nil || st.Dev != want.Dev || st.Ino != want.Ino {
		unix.Close(nfd)
		return -1, fmt.Errorf("descriptor %q: reopened a different file", NameFeed)
	}
	return nfd, nil
}
