// Command queueworker is a worker in the original's manner for the work
// queue's tests: it connects to ADDR, answers every line but
// KEEP_ALIVE_ACK with "ACK_RECEIVED <length>", sends KEEP_ALIVE now and
// then, and speaks nothing else. Before it acknowledges lines it appends
// them to a file of its own in -record, so that a test knows what every
// worker handled, even one that died before its acks went out.
//
// With -ack-delay it waits between handling lines and acknowledging
// them, as a slow worker does.
//
// Usage: queueworker [flags] ADDR. It exits 2 at the end of its lifetime
// (-life-min to -life-max; none when both are 0), having handled lines it
// does not acknowledge then, or when the server closes the connection; 3
// on receiving a line that holds -die-on.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	lifeMin := flag.Duration("life-min", 0, "shortest lifetime; 0 with -life-max 0: live until the connection ends")
	lifeMax := flag.Duration("life-max", 0, "longest lifetime")
	record := flag.String("record", "", "directory to append the lines handled to, one file per process")
	neverAck := flag.Bool("never-ack", false, "read lines but acknowledge none")
	dieOn := flag.String("die-on", "", "exit 3 on receiving a line that holds this")
	keepAlive := flag.Duration("keepalive", 200*time.Millisecond, "send KEEP_ALIVE this often")
	ackDelay := flag.Duration("ack-delay", 0, "wait this long between handling lines and acknowledging them (a slow worker)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: queueworker [flags] ADDR")
		os.Exit(1)
	}
	conn, err := net.Dial("tcp", flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "queueworker: %v\n", err)
		os.Exit(2)
	}
	var rec *os.File
	if *record != "" {
		name := filepath.Join(*record, strconv.Itoa(os.Getpid()))
		if rec, err = os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			fmt.Fprintf(os.Stderr, "queueworker: %v\n", err)
			os.Exit(1)
		}
	}
	// At the end of its lifetime the worker dies in the worst place it
	// can: after it has handled lines, before it acknowledges them. An
	// idle worker dies a little later.
	var deadline time.Time
	if *lifeMax > 0 {
		life := *lifeMin + rand.N(*lifeMax-*lifeMin+1)
		deadline = time.Now().Add(life)
		time.AfterFunc(life+50*time.Millisecond, func() { os.Exit(2) })
	}
	var wmu sync.Mutex // guards writes to conn
	go func() {
		for range time.Tick(*keepAlive) {
			wmu.Lock()
			_, err := conn.Write([]byte("KEEP_ALIVE\n"))
			wmu.Unlock()
			if err != nil {
				os.Exit(2)
			}
		}
	}()

	r := bufio.NewReaderSize(conn, 64<<10)
	var acks, handled []byte
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			os.Exit(2)
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "KEEP_ALIVE_ACK" {
			continue
		}
		if *dieOn != "" && strings.Contains(line, *dieOn) {
			os.Exit(3)
		}
		handled = append(append(handled, line...), '\n')
		acks = fmt.Appendf(acks, "ACK_RECEIVED %d\n", len(line))
		if r.Buffered() > 0 {
			continue
		}
		if rec != nil {
			if _, err := rec.Write(handled); err != nil {
				os.Exit(1)
			}
		}
		handled = handled[:0]
		if *ackDelay > 0 {
			time.Sleep(*ackDelay) // the work itself
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			os.Exit(2)
		}
		if !*neverAck {
			wmu.Lock()
			_, err := conn.Write(acks)
			wmu.Unlock()
			if err != nil {
				os.Exit(2)
			}
		}
		acks = acks[:0]
	}
}
