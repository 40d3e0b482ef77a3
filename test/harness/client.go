package harness

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// KeepAlive and KeepAliveAck are the text protocol's control words, spelt
// out here so that the tests check the bytes on the wire, not a constant
// shared with the code under test.
const (
	KeepAlive    = "KEEP_ALIVE"
	KeepAliveAck = "KEEP_ALIVE_ACK"
)

// Client is a raw TCP client of chattyd's broadcaster.
type Client struct {
	t    testing.TB
	conn *net.TCPConn
	r    *bufio.Reader
	// partial holds the start of a line cut by a read deadline.
	partial []byte
}

// Dial connects to addr, which must be on 127.0.0.1, and closes the
// connection when the test ends.
func Dial(tb testing.TB, addr string) *Client {
	tb.Helper()
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		tb.Fatalf("dial %q: tests connect to 127.0.0.1 only", addr)
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	return NewClient(tb, conn.(*net.TCPConn))
}

// NewClient wraps a connection made elsewhere (in a container's network
// namespace, say) and closes it when the test ends.
func NewClient(tb testing.TB, conn *net.TCPConn) *Client {
	tb.Cleanup(func() { conn.Close() })
	return &Client{t: tb, conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
}

// Conn returns the connection, for what the helpers do not cover.
func (c *Client) Conn() *net.TCPConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() { c.conn.Close() }

// Send writes line followed by "\n".
func (c *Client) Send(line string) {
	c.t.Helper()
	c.SendRaw([]byte(line + "\n"))
}

// SendRaw writes p as it is.
func (c *Client) SendRaw(p []byte) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write(p); err != nil {
		c.t.Fatalf("send to chattyd: %v", err)
	}
}

// TryReadLine reads one line and returns it without its "\n" (a "\r" is
// kept, so that the test sees exactly what was sent). On a timeout the
// bytes read so far are kept for the next read.
func (c *Client) TryReadLine(timeout time.Duration) (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	return c.readLine()
}

func (c *Client) readLine() (string, error) {
	b, err := c.r.ReadSlice('\n')
	if err == nil && c.partial == nil {
		return string(b[:len(b)-1]), nil
	}
	c.partial = append(c.partial, b...)
	if errors.Is(err, bufio.ErrBufferFull) {
		return c.readLine()
	}
	if err != nil {
		return "", err
	}
	line := string(c.partial[:len(c.partial)-1])
	c.partial = nil
	return line, nil
}

// ReadLine reads one line, without its "\n", within timeout.
func (c *Client) ReadLine(timeout time.Duration) string {
	c.t.Helper()
	line, err := c.TryReadLine(timeout)
	if err != nil {
		c.t.Fatalf("read a line from chattyd: %v", err)
	}
	return line
}

// ReadLines reads n lines, without their "\n", within timeout in all.
func (c *Client) ReadLines(n int, timeout time.Duration) []string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	lines := make([]string, 0, n)
	for len(lines) < n {
		line, err := c.readLine()
		if err != nil {
			c.t.Fatalf("read line %d of %d from chattyd: %v", len(lines)+1, n, err)
		}
		lines = append(lines, line)
	}
	return lines
}

// ReadFull reads exactly n bytes within timeout.
func (c *Client) ReadFull(n int, timeout time.Duration) []byte {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	b := make([]byte, n)
	k := copy(b, c.partial)
	c.partial = nil
	if got, err := io.ReadFull(c.r, b[k:]); err != nil {
		c.t.Fatalf("read %d bytes from chattyd: got %d: %v (%q)", n, k+got, err, b[:k+got])
	}
	return b
}

// KeepAlive sends KEEP_ALIVE and checks that the next line is exactly
// KEEP_ALIVE_ACK. Once it returns, chattyd has admitted the client, so
// every line fed afterwards reaches it.
func (c *Client) KeepAlive(timeout time.Duration) {
	c.t.Helper()
	c.Send(KeepAlive)
	if line := c.ReadLine(timeout); line != KeepAliveAck {
		c.t.Fatalf("answer to %s: got %q, want %q", KeepAlive, line, KeepAliveAck)
	}
}

// ReadUntilClosed reads until chattyd closes the connection and returns
// what it read. A reset counts as a close.
func (c *Client) ReadUntilClosed(timeout time.Duration) []byte {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	b := c.partial
	c.partial = nil
	rest, err := io.ReadAll(c.r)
	b = append(b, rest...)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("waiting for chattyd to close the connection: %v (read %d bytes)", err, len(b))
	}
	return b
}

// ExpectClosed checks that chattyd closes the connection within timeout
// without sending anything more.
func (c *Client) ExpectClosed(timeout time.Duration) {
	c.t.Helper()
	if b := c.ReadUntilClosed(timeout); len(b) > 0 {
		c.t.Fatalf("expected the connection to be closed, got %d more bytes: %.200q", len(b), b)
	}
}
