// Package sockowner tells which process holds the other end of a loopback
// TCP connection: given a connection accepted by this process, it finds
// the kernel's inode of the peer socket (the one whose local address is
// the connection's remote address, and whose remote address is its local
// one) through sock_diag netlink, or /proc/net/tcp and tcp6 should
// netlink fail, and then which of a set of candidate processes, or of
// their descendants, has that socket open, by the /proc/PID/fd links.
//
// Nothing the peer sends is read or trusted: the answer comes from the
// kernel alone. It works only for peers in this process's network
// namespace whose /proc entries it may read (same user, or root).
package sockowner

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Errors that callers test with errors.Is.
var (
	// ErrNotTCP: the connection's addresses are not TCP addresses.
	ErrNotTCP = errors.New("not a TCP connection")
	// ErrNotLoopback: the peer is not on a loopback address, so its
	// socket is not on this host for certain.
	ErrNotLoopback = errors.New("peer is not on a loopback address")
	// ErrNoSocket: the kernel has no socket with the peer's address pair,
	// typically because the peer has closed it already.
	ErrNoSocket = errors.New("no socket with the peer's address pair")
	// ErrNoOwner: none of the candidate processes holds the peer socket.
	ErrNoOwner = errors.New("no candidate process holds the peer socket")
)

// Tuple is a TCP socket's address pair, as that socket sees it.
type Tuple struct {
	Local, Remote netip.AddrPort
}

func (t Tuple) String() string { return t.Local.String() + "->" + t.Remote.String() }

// PeerTuple returns the address pair of the socket at the other end of
// conn: conn's remote address as local, its local address as remote.
// Addresses are unmapped (an IPv4 peer of a dual-stack listener is given
// as IPv4). It fails with ErrNotTCP or ErrNotLoopback.
func PeerTuple(conn net.Conn) (Tuple, error) {
	la, ok1 := conn.LocalAddr().(*net.TCPAddr)
	ra, ok2 := conn.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 || la == nil || ra == nil {
		return Tuple{}, fmt.Errorf("sockowner: %s: %w", conn.RemoteAddr(), ErrNotTCP)
	}
	local, remote := ra.AddrPort(), la.AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !local.Addr().IsLoopback() || !remote.Addr().IsLoopback() {
		return Tuple{}, fmt.Errorf("sockowner: %s: %w", local, ErrNotLoopback)
	}
	return Tuple{Local: local, Remote: remote}, nil
}

// LookupError is a failure to find a socket's inode: the netlink error
// and, if the /proc fallback failed too, its error.
type LookupError struct {
	Tuple   Tuple
	Netlink error // why sock_diag gave no answer
	Proc    error // why /proc/net/tcp{,6} gave no answer
}

func (e *LookupError) Error() string {
	return fmt.Sprintf("sockowner: find the socket %s: sock_diag: %v; /proc/net: %v", e.Tuple, e.Netlink, e.Proc)
}

// Unwrap returns both errors, so that errors.Is(err, ErrNoSocket) holds
// when either source found no such socket.
func (e *LookupError) Unwrap() []error { return []error{e.Netlink, e.Proc} }

// Inode returns the inode of the socket with address pair t. It asks
// sock_diag for exactly that pair (IPv4, then IPv6 with mapped addresses
// for an IPv4 pair, as a dual-stack socket has them), and reads
// /proc/net/tcp and tcp6 only if netlink fails. Errors are *LookupError;
// errors.Is(err, ErrNoSocket) when no such socket exists.
func Inode(t Tuple) (uint64, error) {
	ino, nerr := diagInode(t)
	if nerr == nil {
		return ino, nil
	}
	if errors.Is(nerr, ErrNoSocket) {
		// The kernel answered: there is no such socket. /proc/net
		// would say the same, slower.
		return 0, &LookupError{Tuple: t, Netlink: nerr, Proc: errors.New("not read")}
	}
	ino, perr := procInode(t)
	if perr == nil {
		return ino, nil
	}
	return 0, &LookupError{Tuple: t, Netlink: nerr, Proc: perr}
}

// PeerInode returns the inode of the socket at the other end of conn, a
// loopback TCP connection.
func PeerInode(conn net.Conn) (uint64, error) {
	t, err := PeerTuple(conn)
	if err != nil {
		return 0, err
	}
	return Inode(t)
}
