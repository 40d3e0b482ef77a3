// Command origworker behaves as the original OCaml child does, faster: it
// connects to CHATTY_ADDR, answers every line but KEEP_ALIVE_ACK with
// "ACK_RECEIVED <length>", sends KEEP_ALIVE now and then, and exits with
// code 2 after a random lifetime of 0.5 to 2 s (or when the connection
// ends). It sends nothing else: the slot it belongs to is not announced.
//
// For the test, it appends the first word of every line it acknowledges
// to the file named by ORIGWORKER_RECORD, before the acknowledgement is
// written, so the file holds at least every line acknowledged.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	conn, err := net.Dial("tcp", os.Getenv("CHATTY_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "origworker:", err)
		os.Exit(2)
	}
	rec, err := os.OpenFile(os.Getenv("ORIGWORKER_RECORD"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "origworker:", err)
		os.Exit(1)
	}
	life := 500*time.Millisecond + rand.N(1500*time.Millisecond)
	conn.SetReadDeadline(time.Now().Add(life))
	keepAlive := time.Now().Add(200*time.Millisecond + rand.N(800*time.Millisecond))

	r := bufio.NewReaderSize(conn, 64<<10)
	w := bufio.NewWriterSize(conn, 64<<10)
	record := bufio.NewWriterSize(rec, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			break // lifetime over, or the server closed
		}
		line = bytes.TrimRight(line, "\r\n")
		if string(line) != "KEEP_ALIVE_ACK" {
			id, _, _ := bytes.Cut(line, []byte(" "))
			record.Write(id)
			record.WriteByte('\n')
			w.WriteString("ACK_RECEIVED " + strconv.Itoa(len(line)) + "\n")
		}
		if r.Buffered() == 0 { // a batch answered: record it, then ack it
			if time.Now().After(keepAlive) {
				w.WriteString("KEEP_ALIVE\n")
				keepAlive = time.Now().Add(5 * time.Second)
			}
			if record.Flush() != nil || w.Flush() != nil {
				break
			}
		}
	}
	// Acks still buffered were never sent: recording them is harmless.
	record.Flush()
	rec.Close()
	os.Exit(2)
}
