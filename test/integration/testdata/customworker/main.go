// Command customworker is a pool worker written outside chatty, the way a
// user would write one for pool.command: it connects to the address in its
// first argument (or CHATTY_ADDR), answers every line but KEEP_ALIVE_ACK
// with "ACK_RECEIVED <length>" like the original child, and says on stderr
// what it does, which chattyd logs under the worker's slot.
//
// Usage: customworker [ADDR [SLOT]]. A SLOT argument must equal CHATTY_SLOT.
// It exits 0 on SIGTERM, 2 when the server closes the connection and 1 on
// bad arguments.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	addr := os.Getenv("CHATTY_ADDR")
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	slot, ok := os.LookupEnv("CHATTY_SLOT")
	if !ok {
		fail("CHATTY_SLOT is not set")
	}
	if _, err := strconv.Atoi(slot); err != nil {
		fail(fmt.Sprintf("CHATTY_SLOT=%q is not a number", slot))
	}
	if len(os.Args) > 2 && os.Args[2] != slot {
		fail(fmt.Sprintf("slot argument %q differs from CHATTY_SLOT=%q", os.Args[2], slot))
	}
	if addr == "" {
		fail("no address: pass it as the first argument or in CHATTY_ADDR")
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "customworker: connect to %s: %v\n", addr, err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "customworker: slot %s (CHATTY_SLOT=%s) connected to %s\n", slot, slot, addr)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "customworker: stopping on SIGTERM")
		os.Exit(0)
	}()

	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			fmt.Fprintf(os.Stderr, "customworker: connection ended: %v\n", err)
			os.Exit(2)
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line != "KEEP_ALIVE_ACK" {
			fmt.Fprintf(w, "ACK_RECEIVED %d\n", len(line))
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				fmt.Fprintf(os.Stderr, "customworker: send acks: %v\n", err)
				os.Exit(2)
			}
		}
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "customworker:", msg)
	os.Exit(1)
}
