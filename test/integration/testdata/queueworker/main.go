// Command queueworker is a worker in the original's manner for the work
// queue's tests: it connects to ADDR, answers every line but
// KEEP_ALIVE_ACK with "ACK_RECEIVED <length>", sends KEEP_ALIVE now and
// then, and speaks nothing else. Before it acknowledges lines it appends
// them to a file of its own in -record, so that a test knows what every
// worker handled, even one that died before its acks went out.
//
// With -ack-delay it waits between handling lines and acknowledging
// them, as a slow worker does.
// With -sequenced it is a worker of the sequenced listener instead: it
// sends START - next, reads the STREAM answer, is sent "<seq> <line>",
// records the line and answers "ACK <seq>"; -bad-ack-on makes it answer a
// line that holds that text, the first time, with the ack of a number it
// was never sent.
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
	sequenced := flag.Bool("sequenced", false, "speak the sequenced protocol (START - next, <seq> <line>, ACK <seq>)")
	badAckOn := flag.String("bad-ack-on", "", "with -sequenced, acknowledge a line that holds this with a wrong number, once")
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
	if *sequenced {
		if _, err := conn.Write([]byte("START - next\n")); err != nil {
			os.Exit(2)
		}
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "STREAM ") {
			fmt.Fprintf(os.Stderr, "queueworker: answer to START: %q, %v\n", l, err)
			os.Exit(2)
		}
	}
	var acks, handled []byte
	badAcked := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			os.Exit(2)
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "KEEP_ALIVE_ACK" {
			continue
		}
		var seq uint64
		if *sequenced {
			num, text, ok := strings.Cut(line, " ")
			n, err := strconv.ParseUint(num, 10, 64)
			if !ok || err != nil {
				fmt.Fprintf(os.Stderr, "queueworker: not a sequenced line: %q\n", line)
				os.Exit(1)
			}
			seq, line = n, text
		}
		if *dieOn != "" && strings.Contains(line, *dieOn) {
			os.Exit(3)
		}
		handled = append(append(handled, line...), '\n')
		switch {
		case !*sequenced:
			acks = fmt.Appendf(acks, "ACK_RECEIVED %d\n", len(line))
		case *badAckOn != "" && !badAcked && strings.Contains(line, *badAckOn):
			badAcked = true
			acks = fmt.Appendf(acks, "ACK %d\n", seq+1000000)
		default:
			acks = fmt.Appendf(acks, "ACK %d\n", seq)
		}
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
