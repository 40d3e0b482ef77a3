package harness

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "daemon", "main.go")); err != nil {
		t.Fatalf("module root %s has no daemon/main.go: %v", root, err)
	}
}

// A datagram may carry several assignments; each is collected on its own.
func TestNotifySocketSplitsDatagrams(t *testing.T) {
	n := NotifySocket(t)
	if len(n.Path) >= 108 {
		t.Fatalf("socket path %q is too long for a unix socket", n.Path)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, d := range []string{"READY=1\nSTATUS=up", "RELOADING=1\nMONOTONIC_USEC=12", "READY=1"} {
		if _, err := conn.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	_, i := n.Wait(t, "RELOADING=1", time.Second)
	if status, _ := n.Wait(t, "STATUS=", time.Second); status != "STATUS=up" {
		t.Errorf("got %q, want STATUS=up", status)
	}
	if _, j := n.WaitSince(t, i, "READY=1", time.Second); j != 5 {
		t.Errorf("the READY=1 after RELOADING=1 is assignment %d, want 5", j)
	}
}

// Output waiters wake on writes and see every byte, in order.
func TestOutputWakesWaiters(t *testing.T) {
	o := NewOutput()
	b, changed := o.snapshot()
	if len(b) != 0 {
		t.Fatalf("new output holds %q", b)
	}
	go o.Write([]byte("hello"))
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("a write did not wake the waiter")
	}
	o.Write([]byte(" world"))
	if got := o.String(); got != "hello world" {
		t.Fatalf("got %q", got)
	}
}
