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
			p.Feed, err = feedFile(f)
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

// feedFile checks that f is a FIFO and returns a non-blocking duplicate,
// so that the Go poller can interrupt a read at shutdown. It uses
// SyscallConn rather than f.Fd, which would switch f to blocking mode.
func feedFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("descriptor %q: %w", NameFeed, err)
	}
	dup := -1
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
		if dup, opErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); opErr != nil {
			return
		}
		opErr = unix.SetNonblock(dup, true)
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		if dup >= 0 {
			unix.Close(dup)
		}
		return nil, err
	}
	return os.NewFile(uintptr(dup), NameFeed), nil
}
