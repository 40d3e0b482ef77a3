package broadcast

import (
	"net"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"golang.org/x/sys/unix"
)

// sockopt reads an integer TCP option of the server's end of a client.
func sockopt(t *testing.T, conn net.Conn, level, opt int) int {
	t.Helper()
	if w, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = w.NetConn()
	}
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}

// serverConn returns the server's end of the only connected client.
func serverConn(t *testing.T, s *Server) net.Conn {
	t.Helper()
	var conn net.Conn
	poll.Eventually(t, wait, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.clients {
			conn = c.conn
		}
		return conn != nil
	}, "the client admitted")
	return conn
}

// An admitted client's socket gets the configured keep-alive and a
// TCP_USER_TIMEOUT of idle + interval × count; a reload applies to the
// connections accepted after it.
func TestTCPKeepAliveSet(t *testing.T) {
	lim := testLimits()
	lim.TCPKeepAlive = TCPKeepAlive{Idle: 7 * time.Second, Interval: 2 * time.Second, Count: 4}
	s := startServer(t, lim)
	c := dial(t, s)
	conn := serverConn(t, s)
	for _, o := range []struct {
		name      string
		level, op int
		want      int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 7},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 2},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 4},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 15000},
	} {
		if got := sockopt(t, conn, o.level, o.op); got != o.want {
			t.Errorf("%s = %d, want %d", o.name, got, o.want)
		}
	}
	c.Close()
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "the first client gone")

	lim.TCPKeepAlive.Idle = 11 * time.Second
	s.SetLimits(lim)
	dial(t, s)
	if got := sockopt(t, serverConn(t, s), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); got != 11 {
		t.Errorf("after the reload TCP_KEEPIDLE = %d, want 11", got)
	}
}
