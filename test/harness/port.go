package harness

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// portFloor is the lowest port FreeLoopbackAddr picks.
const portFloor = 10000

// FreeLoopbackAddr returns a 127.0.0.1 address whose port was free a
// moment ago. The port is picked at random below the kernel's ephemeral
// range: port-0 listeners and outgoing connections, which parallel tests
// make by the thousand, take their ports from that range, and one handed
// out, closed and handed out again before its test binds it has failed
// make test with "address already in use". Below the range only another
// such pick can take it.
func FreeLoopbackAddr() (string, error) {
	top := ephemeralLow()
	if top-portFloor < 1000 {
		return "", fmt.Errorf("the ephemeral port range starts at %d, leaving too few ports above %d", top, portFloor)
	}
	for range 100 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", portFloor+rand.IntN(top-portFloor)))
		if err != nil {
			continue // taken
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr, nil
	}
	return "", errors.New("no free 127.0.0.1 port below the ephemeral range in 100 tries")
}

// ephemeralLow returns the first port of the kernel's ephemeral range,
// 32768 when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 0 {
		return 32768
	}
	return lo
}
