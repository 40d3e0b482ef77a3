package harness

import (
	"net"
	"strconv"
	"testing"
)

// FreeLoopbackAddr gives a 127.0.0.1 port below the ephemeral range that
// can be bound, and does not give a port that is taken.
func TestFreeLoopbackAddr(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		addr, err := FreeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		if host != "127.0.0.1" || p < portFloor || p >= low {
			t.Fatalf("FreeLoopbackAddr gave %s, want 127.0.0.1 and a port from %d to %d", addr, portFloor, low-1)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the address given, %s, cannot be bound: %v", addr, err)
		}
		defer ln.Close() // held: no later pick may give it
	}
}
