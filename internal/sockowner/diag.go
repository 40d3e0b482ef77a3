package sockowner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The layout of the sock_diag messages of linux/inet_diag.h, which
// golang.org/x/sys/unix does not declare. Ports and addresses are in
// network order, the rest in the host's.
const (
	sizeofSockID  = 48                    // struct inet_diag_sockid
	sizeofReqV2   = 8 + sizeofSockID      // struct inet_diag_req_v2
	sizeofDiagMsg = 4 + sizeofSockID + 20 // struct inet_diag_msg
	inodeOffset   = 4 + sizeofSockID + 16 // inet_diag_msg.idiag_inode

	tcpAllStates = 0xfff // every TCP state, 1<<TCP_ESTABLISHED ... 1<<TCP_NEW_SYN_RECV
	noCookie     = ^uint32(0)

	diagTimeout = time.Second // how long the kernel may take to answer
)

// diagSeq numbers the requests, so that a reply is known for its own.
var diagSeq atomic.Uint32

// diagInode asks sock_diag for the socket with address pair t: IPv4 and
// then, for an IPv4 pair, IPv6 with mapped addresses; IPv6 otherwise.
func diagInode(t Tuple) (uint64, error) {
	if t.Local.Addr().Is4() {
		ino, err := diagLookup(unix.AF_INET, t)
		if !errors.Is(err, ErrNoSocket) {
			return ino, err
		}
		mapped := Tuple{
			Local:  netip.AddrPortFrom(netip.AddrFrom16(t.Local.Addr().As16()), t.Local.Port()),
			Remote: netip.AddrPortFrom(netip.AddrFrom16(t.Remote.Addr().As16()), t.Remote.Port()),
		}
		return diagLookup(unix.AF_INET6, mapped)
	}
	return diagLookup(unix.AF_INET6, t)
}

// diagLookup sends one exact-match request (no dump) and reads the reply.
func diagLookup(family uint8, t Tuple) (uint64, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("open netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(diagTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("set netlink receive timeout: %w", err)
	}
	seq := diagSeq.Add(1)
	req := diagRequest(family, t, seq)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("send sock_diag request: %w", err)
	}
	var buf [1024]byte
	for {
		n, from, err := unix.Recvfrom(fd, buf[:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read sock_diag reply: %w", err)
		}
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue // only the kernel answers
		}
		ino, err := parseDiagReply(buf[:n], seq, t)
		if errors.Is(err, errOtherSeq) {
			continue
		}
		return ino, err
	}
}

// diagRequest encodes a netlink message holding an inet_diag_req_v2 for
// the TCP socket with address pair t.
func diagRequest(family uint8, t Tuple, seq uint32) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+sizeofReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(b[8:], seq)
	r := b[unix.SizeofNlMsghdr:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], tcpAllStates)
	putSockID(r[8:], family, t)
	return b
}

// putSockID writes an inet_diag_sockid for t, any interface, no cookie.
func putSockID(id []byte, family uint8, t Tuple) {
	binary.BigEndian.PutUint16(id[0:], t.Local.Port())
	binary.BigEndian.PutUint16(id[2:], t.Remote.Port())
	putAddr(id[4:20], family, t.Local.Addr())
	putAddr(id[20:36], family, t.Remote.Addr())
	binary.NativeEndian.PutUint32(id[40:], noCookie)
	binary.NativeEndian.PutUint32(id[44:], noCookie)
}

func putAddr(dst []byte, family uint8, a netip.Addr) {
	if family == unix.AF_INET {
		a4 := a.As4()
		copy(dst, a4[:])
		return
	}
	a16 := a.As16()
	copy(dst, a16[:])
}

// errOtherSeq marks a reply to some other request.
var errOtherSeq = errors.New("reply to another request")

// parseDiagReply reads the kernel's reply to request seq for t: the
// socket's inode, or ErrNoSocket, or what else the kernel said. The bytes
// come from the kernel but are parsed as if from anyone: every length is
// checked.
func parseDiagReply(b []byte, seq uint32, t Tuple) (uint64, error) {
	ne := binary.NativeEndian
	if len(b) == 0 {
		return 0, errors.New("empty sock_diag reply")
	}
	for len(b) > 0 {
		if len(b) < unix.SizeofNlMsghdr {
			return 0, fmt.Errorf("sock_diag reply of %d bytes is shorter than a netlink header", len(b))
		}
		size := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		if size < unix.SizeofNlMsghdr || size > len(b) {
			return 0, fmt.Errorf("sock_diag message length %d does not fit the %d bytes read", size, len(b))
		}
		msg, body := b[:size], b[unix.SizeofNlMsghdr:size]
		b = b[min(nlAlign(size), len(b)):]
		if ne.Uint32(msg[8:]) != seq {
			return 0, errOtherSeq
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return 0, errors.New("sock_diag error message too short")
			}
			errno := -int32(ne.Uint32(body))
			switch {
			case errno == 0:
				continue // an acknowledgement
			case unix.Errno(errno) == unix.ENOENT:
				return 0, ErrNoSocket
			default:
				return 0, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
			}
		case unix.NLMSG_DONE:
			return 0, ErrNoSocket
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(body) < sizeofDiagMsg {
				return 0, fmt.Errorf("sock_diag answer of %d bytes is shorter than inet_diag_msg (%d)", len(body), sizeofDiagMsg)
			}
			if !sameSockID(body[4:4+sizeofSockID], t) {
				return 0, fmt.Errorf("sock_diag answered for another socket than %s", t)
			}
			return uint64(ne.Uint32(body[inodeOffset:])), nil
		default:
			return 0, fmt.Errorf("unexpected sock_diag message type %d", typ)
		}
	}
	return 0, ErrNoSocket
}

// sameSockID reports whether id, from a reply, has t's ports and
// addresses, in either family's encoding.
func sameSockID(id []byte, t Tuple) bool {
	if binary.BigEndian.Uint16(id[0:]) != t.Local.Port() || binary.BigEndian.Uint16(id[2:]) != t.Remote.Port() {
		return false
	}
	return sameAddr(id[4:20], t.Local.Addr()) && sameAddr(id[20:36], t.Remote.Addr())
}

func sameAddr(b []byte, a netip.Addr) bool {
	a16 := netip.AddrFrom16([16]byte(b))
	if a16.Unmap() == a.Unmap() {
		return true
	}
	return a.Unmap().Is4() && netip.AddrFrom4([4]byte(b[:4])) == a.Unmap()
}

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
