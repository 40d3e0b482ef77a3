package harness

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Notify is a systemd notification socket: a unixgram socket that collects
// the assignments ("READY=1", "STATUS=...") chattyd sends to NOTIFY_SOCKET.
type Notify struct {
	// Path is the socket's path, for Options.NotifySocket.
	Path string

	mu      sync.Mutex // guards msgs and changed
	msgs    []string   // every assignment received, in order
	changed chan struct{}
}

// NotifySocket creates a notification socket in a short temporary
// directory (socket paths are limited to 108 bytes) and collects what it
// receives until the test ends.
func NotifySocket(tb testing.TB) *Notify {
	tb.Helper()
	base := os.TempDir()
	if len(base) > 60 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "sdn")
	if err != nil {
		tb.Fatal(err)
	}
	n := &Notify{Path: filepath.Join(dir, "notify"), changed: make(chan struct{})}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("notify socket: %v", err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 64<<10)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.add(string(buf[:k]))
		}
	}()
	tb.Cleanup(func() {
		conn.Close()
		<-stopped
		os.RemoveAll(dir)
	})
	return n
}

// add records one datagram, which may hold several newline-separated
// assignments.
func (n *Notify) add(datagram string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range strings.Split(datagram, "\n") {
		if a != "" {
			n.msgs = append(n.msgs, a)
		}
	}
	close(n.changed)
	n.changed = make(chan struct{})
}

// Messages returns every assignment received so far, in order.
func (n *Notify) Messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// Wait waits for an assignment equal to want, or starting with it when want
// ends in "=" (such as "STATUS="), and returns it and the index after it.
func (n *Notify) Wait(tb testing.TB, want string, timeout time.Duration) (string, int) {
	tb.Helper()
	return n.WaitSince(tb, 0, want, timeout)
}

// WaitSince is Wait counting only assignments from index since on.
func (n *Notify) WaitSince(tb testing.TB, since int, want string, timeout time.Duration) (string, int) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		n.mu.Lock()
		msgs, changed := n.msgs, n.changed
		n.mu.Unlock()
		for i := since; i < len(msgs); i++ {
			if msgs[i] == want || (strings.HasSuffix(want, "=") && strings.HasPrefix(msgs[i], want)) {
				return msgs[i], i + 1
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("no %q on the notification socket within %s; received %q", want, timeout, msgs)
		}
	}
}
