package sockowner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// helperEnv makes the test binary a dialling child: it connects to the
// address, prints "connected", and holds the connection until its stdin
// ends.
const helperEnv = "SOCKOWNER_TEST_DIAL"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		fmt.Println("connected")
		_, _ = io.Copy(io.Discard, os.Stdin)
		c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// listen listens on network and address for the test.
func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// pair returns both ends of a connection to ln, dialled to dial.
func pair(t testing.TB, ln net.Listener, dial string) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// inodeOf returns the inode of c's socket, from fstat.
func inodeOf(t testing.TB, c net.Conn) uint64 {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

func TestPeerInode(t *testing.T) {
	for _, tc := range []struct {
		name, listen, dial string
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "::1"},
		{"ipv4 to a dual-stack listener", "[::]:0", "127.0.0.1"},
		{"ipv6 to a dual-stack listener", "[::]:0", "::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, tc.listen)
			port := ln.Addr().(*net.TCPAddr).Port
			client, server := pair(t, ln, net.JoinHostPort(tc.dial, fmt.Sprint(port)))
			want := inodeOf(t, client)
			got, err := PeerInode(server)
			if err != nil {
				t.Fatalf("PeerInode: %v", err)
			}
			if got != want {
				t.Fatalf("PeerInode = %d, want the client socket's inode %d", got, want)
			}
			// The /proc fallback finds the same socket.
			tu, err := PeerTuple(server)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := procInode(tu); err != nil || got != want {
				t.Fatalf("procInode = %d, %v; want %d", got, err, want)
			}
			// Our own end is not the peer.
			if own := inodeOf(t, server); own == got {
				t.Fatalf("PeerInode returned the server's own socket %d", own)
			}
		})
	}
}

func TestNoSocket(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	client, server := pair(t, ln, ln.Addr().String())
	tu, err := PeerTuple(server)
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
	server.Close()
	// Closed on both sides: the client's socket is gone or in TIME_WAIT,
	// which has no inode (0). Another port was never used.
	gone := Tuple{Local: netip.AddrPortFrom(tu.Local.Addr(), 1), Remote: tu.Remote}
	if _, err := Inode(gone); !errors.Is(err, ErrNoSocket) {
		t.Fatalf("Inode of a pair with no socket = %v, want ErrNoSocket", err)
	}
	var le *LookupError
	if _, err := Inode(gone); !errors.As(err, &le) || le.Tuple != gone {
		t.Fatalf("error %v is not a *LookupError for %s", err, gone)
	}
	if _, err := procInode(gone); !errors.Is(err, ErrNoSocket) {
		t.Fatalf("procInode of a pair with no socket = %v, want ErrNoSocket", err)
	}
}

// fakeConn has the addresses it is given and nothing else.
type fakeConn struct {
	net.Conn
	local, remote net.Addr
}

func (c fakeConn) LocalAddr() net.Addr  { return c.local }
func (c fakeConn) RemoteAddr() net.Addr { return c.remote }

func TestPeerTupleRefuses(t *testing.T) {
	lo := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1000}
	for _, tc := range []struct {
		name string
		conn net.Conn
		want error
	}{
		{"remote not loopback", fakeConn{local: lo, remote: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5}}, ErrNotLoopback},
		{"local not loopback", fakeConn{local: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5}, remote: lo}, ErrNotLoopback},
		{"unix socket", fakeConn{local: &net.UnixAddr{Name: "/a"}, remote: &net.UnixAddr{Name: "/b"}}, ErrNotTCP},
		{"nil address", fakeConn{local: lo, remote: (*net.TCPAddr)(nil)}, ErrNotTCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := PeerTuple(tc.conn); !errors.Is(err, tc.want) {
				t.Fatalf("PeerTuple = %v, want %v", err, tc.want)
			}
			if _, err := Find(tc.conn, []int{os.Getpid()}); !errors.Is(err, tc.want) {
				t.Fatalf("Find = %v, want %v", err, tc.want)
			}
		})
	}
}

// startDialer starts cmd (which must run the test binary as a dialler,
// perhaps through a shell) in its own process group and waits until it
// has connected. Its stdin ends, and it exits, at cleanup.
func startDialer(t testing.TB, cmd *exec.Cmd, addr string) *exec.Cmd {
	t.Helper()
	cmd.Env = append(os.Environ(), helperEnv+"="+addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "connected" {
		t.Fatalf("dialler said %q, %v", line, err)
	}
	return cmd
}

func self(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func TestFindChild(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	exe := self(t)

	// A bystander that holds a connection of its own.
	other := startDialer(t, exec.Command(exe), addr)
	otherConn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer otherConn.Close()

	direct := startDialer(t, exec.Command(exe), addr)
	directConn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer directConn.Close()

	// A wrapper shell that forks the dialler instead of exec'ing it
	// (the "; exit" keeps sh from replacing itself).
	wrapped := startDialer(t, exec.Command("/bin/sh", "-c", `"$0"; exit $?`, exe), addr)
	wrappedConn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer wrappedConn.Close()

	// The wrapper really forked: its own descriptors do not hold the
	// socket, so only looking at its children can find it.
	ino, err := PeerInode(wrappedConn)
	if err != nil {
		t.Fatal(err)
	}
	var buf [64]byte
	if own, err := holds(wrapped.Process.Pid, []byte(fmt.Sprintf("socket:[%d]", ino)), buf[:]); own || err != nil {
		t.Fatalf("the wrapper shell holds the socket itself (%v, %v): the test would not test its children", own, err)
	}

	candidates := []int{other.Process.Pid, direct.Process.Pid, wrapped.Process.Pid}
	for _, tc := range []struct {
		name string
		conn net.Conn
		want int
	}{
		{"the process itself", directConn, direct.Process.Pid},
		{"a child of a wrapper", wrappedConn, wrapped.Process.Pid},
		{"the bystander", otherConn, other.Process.Pid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Find(tc.conn, candidates)
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Find = %d, want %d (candidates %v)", got, tc.want, candidates)
			}
		})
	}
	t.Run("not among the candidates", func(t *testing.T) {
		_, err := Find(directConn, []int{other.Process.Pid, wrapped.Process.Pid})
		if !errors.Is(err, ErrNoOwner) {
			t.Fatalf("Find = %v, want ErrNoOwner", err)
		}
	})
	t.Run("no candidates", func(t *testing.T) {
		if _, err := Find(directConn, nil); !errors.Is(err, ErrNoOwner) {
			t.Fatalf("Find = %v, want ErrNoOwner", err)
		}
	})
	t.Run("a pid that has exited", func(t *testing.T) {
		gone := exec.Command("true")
		if err := gone.Run(); err != nil {
			t.Fatal(err)
		}
		if _, err := Find(directConn, []int{gone.Process.Pid}); !errors.Is(err, ErrNoOwner) {
			t.Fatalf("Find = %v, want ErrNoOwner", err)
		}
	})
}

func TestParseProcNetLine(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		ok         bool
		local      string
		remote     string
		inode      uint64
	}{
		{
			name:  "ipv4",
			line:  "   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1",
			ok:    true,
			local: "127.0.0.1:54321", remote: "127.0.0.1:8080", inode: 4242,
		},
		{
			name:  "ipv6 loopback",
			line:  "   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 20 4 30 10 -1",
			ok:    true,
			local: "[::1]:8080", remote: "[::1]:54321", inode: 77,
		},
		{
			name:  "ipv4-mapped ipv6 is unmapped",
			line:  "   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 78 1 0 20 4 30 10 -1",
			ok:    true,
			local: "127.0.0.1:8080", remote: "127.0.0.1:54321", inode: 78,
		},
		{name: "header", line: "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"},
		{name: "short", line: "1: 0100007F:D431"},
		{name: "bad hex", line: "1: 0100007G:D431 0100007F:1F90 01 0:0 0:0 0 0 0 5"},
		{name: "bad port", line: "1: 0100007F:D4311 0100007F:1F90 01 0:0 0:0 0 0 0 5"},
		{name: "bad inode", line: "1: 0100007F:D431 0100007F:1F90 01 0:0 0:0 0 0 0 -5"},
		{name: "odd address length", line: "1: 0100007F00:D431 0100007F:1F90 01 0:0 0:0 0 0 0 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := parseProcNetLine([]byte(tc.line))
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (%+v)", ok, tc.ok, e)
			}
			if !ok {
				return
			}
			if e.tuple.Local.String() != tc.local || e.tuple.Remote.String() != tc.remote || e.inode != tc.inode {
				t.Fatalf("got %s inode %d, want %s->%s inode %d", e.tuple, e.inode, tc.local, tc.remote, tc.inode)
			}
		})
	}
}
