package sockowner

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
)

// procInode finds t's socket in /proc/net/tcp, or tcp6 (where IPv6
// sockets, and dual-stack ones with mapped IPv4 addresses, are listed).
func procInode(t Tuple) (uint64, error) {
	var errs []error
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if name == "/proc/net/tcp" && !t.Local.Addr().Is4() {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ino, err := scanProcNet(f, t)
		f.Close()
		if err == nil {
			return ino, nil
		}
		if !errors.Is(err, ErrNoSocket) {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return 0, errors.Join(errs...)
	}
	return 0, ErrNoSocket
}

// maxProcNetLine bounds a line of /proc/net/tcp{,6}; real ones are
// about 150 bytes.
const maxProcNetLine = 512

// scanProcNet reads a /proc/net/tcp or tcp6 table and returns the inode
// of the socket with address pair t, or ErrNoSocket. Lines that do not
// parse are skipped, not fatal: the format has grown columns before.
func scanProcNet(r io.Reader, t Tuple) (uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, maxProcNetLine), maxProcNetLine)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		e, ok := parseProcNetLine(sc.Bytes())
		if ok && e.tuple.Local == t.Local && e.tuple.Remote == t.Remote {
			return e.inode, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, ErrNoSocket
}

// procNetEntry is one socket of /proc/net/tcp{,6}.
type procNetEntry struct {
	tuple Tuple // addresses unmapped
	inode uint64
}

// parseProcNetLine parses one line of the table:
//
//	sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
//
// where an address is the kernel's words in hex, each in the host's byte
// order, and a port is hex.
func parseProcNetLine(line []byte) (procNetEntry, bool) {
	f := bytes.Fields(line)
	if len(f) < 10 {
		return procNetEntry{}, false
	}
	local, ok1 := parseProcAddr(f[1])
	remote, ok2 := parseProcAddr(f[2])
	inode, err := strconv.ParseUint(string(f[9]), 10, 64)
	if !ok1 || !ok2 || err != nil {
		return procNetEntry{}, false
	}
	return procNetEntry{tuple: Tuple{Local: local, Remote: remote}, inode: inode}, true
}

// parseProcAddr parses "0100007F:1F90" (IPv4) or 32 hex digits and a
// port (IPv6).
func parseProcAddr(b []byte) (netip.AddrPort, bool) {
	i := bytes.IndexByte(b, ':')
	if i < 0 || len(b)-i-1 != 4 {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(string(b[i+1:]), 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	hex := b[:i]
	var raw [16]byte
	switch len(hex) {
	case 8, 32:
	default:
		return netip.AddrPort{}, false
	}
	for w := 0; w < len(hex)/8; w++ {
		v, err := strconv.ParseUint(string(hex[8*w:8*w+8]), 16, 32)
		if err != nil {
			return netip.AddrPort{}, false
		}
		binary.NativeEndian.PutUint32(raw[4*w:], uint32(v))
	}
	var a netip.Addr
	if len(hex) == 8 {
		a = netip.AddrFrom4([4]byte(raw[:4]))
	} else {
		a = netip.AddrFrom16(raw).Unmap()
	}
	return netip.AddrPortFrom(a, uint16(port)), true
}
