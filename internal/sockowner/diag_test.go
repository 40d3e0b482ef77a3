package sockowner

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var testTuple = Tuple{
	Local:  netip.MustParseAddrPort("127.0.0.1:54321"),
	Remote: netip.MustParseAddrPort("127.0.0.1:8080"),
}

// diagMessage encodes a netlink message of type typ with body.
func diagMessage(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint32(b[8:], seq)
	copy(b[unix.SizeofNlMsghdr:], body)
	return b
}

// diagAnswer encodes an inet_diag_msg for t with inode.
func diagAnswer(family uint8, t Tuple, inode uint32) []byte {
	m := make([]byte, sizeofDiagMsg)
	m[0] = family
	putSockID(m[4:], family, t)
	binary.NativeEndian.PutUint32(m[inodeOffset:], inode)
	return m
}

func diagErrno(errno unix.Errno) []byte {
	b := make([]byte, 4+unix.SizeofNlMsghdr)
	binary.NativeEndian.PutUint32(b, uint32(-int32(errno)))
	return b
}

func TestParseDiagReply(t *testing.T) {
	other := Tuple{Local: netip.MustParseAddrPort("127.0.0.1:1"), Remote: testTuple.Remote}
	mapped := Tuple{
		Local:  netip.AddrPortFrom(netip.AddrFrom16(testTuple.Local.Addr().As16()), testTuple.Local.Port()),
		Remote: netip.AddrPortFrom(netip.AddrFrom16(testTuple.Remote.Addr().As16()), testTuple.Remote.Port()),
	}
	for _, tc := range []struct {
		name    string
		reply   []byte
		inode   uint64
		wantErr error  // matched with errors.Is
		errText string // or contained in the error
	}{
		{name: "ipv4 answer", reply: diagMessage(unix.SOCK_DIAG_BY_FAMILY, 7, diagAnswer(unix.AF_INET, testTuple, 4242)), inode: 4242},
		{name: "mapped ipv6 answer", reply: diagMessage(unix.SOCK_DIAG_BY_FAMILY, 7, diagAnswer(unix.AF_INET6, mapped, 99)), inode: 99},
		{name: "no such socket", reply: diagMessage(unix.NLMSG_ERROR, 7, diagErrno(unix.ENOENT)), wantErr: ErrNoSocket},
		{name: "permission", reply: diagMessage(unix.NLMSG_ERROR, 7, diagErrno(unix.EPERM)), wantErr: unix.EPERM},
		{name: "ack then answer", reply: append(diagMessage(unix.NLMSG_ERROR, 7, diagErrno(0)), diagMessage(unix.SOCK_DIAG_BY_FAMILY, 7, diagAnswer(unix.AF_INET, testTuple, 5))...), inode: 5},
		{name: "done", reply: diagMessage(unix.NLMSG_DONE, 7, make([]byte, 4)), wantErr: ErrNoSocket},
		{name: "another request's", reply: diagMessage(unix.SOCK_DIAG_BY_FAMILY, 8, diagAnswer(unix.AF_INET, testTuple, 1)), wantErr: errOtherSeq},
		{name: "another socket", reply: diagMessage(unix.SOCK_DIAG_BY_FAMILY, 7, diagAnswer(unix.AF_INET, other, 1)), errText: "another socket"},
		{name: "empty", reply: nil, errText: "empty"},
		{name: "short header", reply: []byte{1, 2, 3}, errText: "shorter than a netlink header"},
		{name: "length past the end", reply: func() []byte {
			b := diagMessage(unix.SOCK_DIAG_BY_FAMILY, 7, diagAnswer(unix.AF_INET, testTuple, 1))
			binary.NativeEndian.PutUint32(b, uint32(len(b)+1))
			return b
		}(), errText: "does not fit"},
		{name: "short answer", reply: diagMessage(unix.SOCK_DIAG_BY_FAMILY, 7, make([]byte, 10)), errText: "shorter than inet_diag_msg"},
		{name: "short error", reply: diagMessage(unix.NLMSG_ERROR, 7, []byte{1}), errText: "too short"},
		{name: "unknown type", reply: diagMessage(99, 7, nil), errText: "unexpected sock_diag message type 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ino, err := parseDiagReply(tc.reply, 7, testTuple)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			case tc.errText != "":
				if err == nil || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want one saying %q", err, tc.errText)
				}
			default:
				if err != nil || ino != tc.inode {
					t.Fatalf("= %d, %v; want %d", ino, err, tc.inode)
				}
			}
		})
	}
}

func TestDiagRequestLayout(t *testing.T) {
	b := diagRequest(unix.AF_INET, testTuple, 3)
	if len(b) != 72 {
		t.Fatalf("request is %d bytes, want 72 (nlmsghdr 16 + inet_diag_req_v2 56)", len(b))
	}
	r := b[unix.SizeofNlMsghdr:]
	if r[0] != unix.AF_INET || r[1] != unix.IPPROTO_TCP {
		t.Fatalf("family, protocol = %d, %d", r[0], r[1])
	}
	id := r[8:]
	if got := binary.BigEndian.Uint16(id); got != 54321 {
		t.Fatalf("sport = %d", got)
	}
	if !bytes.Equal(id[4:8], []byte{127, 0, 0, 1}) {
		t.Fatalf("src = %v", id[4:8])
	}
}

// FuzzParseDiagReply: any reply parses without panic, and an inode is
// only returned for a well-formed answer about the asked socket.
func FuzzParseDiagReply(f *testing.F) {
	f.Add(diagMessage(unix.SOCK_DIAG_BY_FAMILY, 7, diagAnswer(unix.AF_INET, testTuple, 4242)))
	f.Add(diagMessage(unix.NLMSG_ERROR, 7, diagErrno(unix.ENOENT)))
	f.Add(append(diagMessage(unix.NLMSG_ERROR, 7, diagErrno(0)), diagMessage(unix.NLMSG_DONE, 7, nil)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for i := 0; i <= len(b); i++ { // split at every position: a short read
			ino, err := parseDiagReply(b[:i], 7, testTuple)
			if err == nil && i < unix.SizeofNlMsghdr+sizeofDiagMsg {
				t.Fatalf("inode %d from %d bytes, fewer than one answer", ino, i)
			}
		}
	})
}

// FuzzScanProcNet: any table parses without panic, and a found socket
// has the asked pair.
func FuzzScanProcNet(f *testing.F) {
	f.Add([]byte("  sl  local_address rem_address   st\n   1: 3DD4007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n"))
	f.Add([]byte("h\n   0: 0000000000000000FFFF00003DD4007F:1F90 0000000000000000FFFF00000100007F:D431 01 0:0 0:0 0 0 0 78\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for i := 0; i <= len(b); i++ {
			if _, err := scanProcNet(bytes.NewReader(b[:i]), testTuple); err != nil && !errors.Is(err, ErrNoSocket) && !strings.Contains(err.Error(), "too long") {
				t.Fatalf("unexpected error %v", err)
			}
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			e, ok := parseProcNetLine(line)
			if ok && (!e.tuple.Local.IsValid() || !e.tuple.Remote.IsValid()) {
				t.Fatalf("parsed invalid addresses %s from %q", e.tuple, line)
			}
		}
	})
}

// FuzzParsePIDs: a children file parses without panic into positive pids
// only, each one of its words.
func FuzzParsePIDs(f *testing.F) {
	f.Add([]byte("123 456 \n"))
	f.Add([]byte(""))
	f.Add([]byte("-1 0 99999999999999999999 7"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pids := parsePIDs(b)
		if len(pids) > len(bytes.Fields(b)) {
			t.Fatalf("%d pids from %d words", len(pids), len(bytes.Fields(b)))
		}
		for _, p := range pids {
			if p <= 0 {
				t.Fatalf("pid %d from %q", p, b)
			}
		}
	})
}

func TestParsePIDs(t *testing.T) {
	got := parsePIDs([]byte("12 7 x -3 0 40\n"))
	if len(got) != 3 || got[0] != 12 || got[1] != 7 || got[2] != 40 {
		t.Fatalf("parsePIDs = %v, want [12 7 40]", got)
	}
}
