package workqueue

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/chatty-dev/chatty/pkg/wire"
)

// Listener says which listener a worker connected to, and so how its
// lines are written and its acks read.
type Listener uint8

// The listeners of a queue.
const (
	// Text is the original protocol: lines as they are, acked by
	// ACK_RECEIVED <length>, in order.
	Text Listener = iota
	// Sequenced is the sequenced line protocol: lines as "<seq> <line>",
	// each acked by ACK <seq>.
	Sequenced
)

// String returns the listener's name as the status shows it.
func (l Listener) String() string {
	if l == Sequenced {
		return "sequenced"
	}
	return "text"
}

// AddSequenced makes the queue serve ln, the sequenced listener, too: its
// workers take lines from the same queue as the text listener's. stream is
// the stream id its STREAM line names. It must be called before Run.
func (q *Queue) AddSequenced(ln net.Listener, stream string) {
	q.seqLn, q.stream = ln, stream
}

// SequencedAddr returns the sequenced listener's address, or nil without
// one.
func (q *Queue) SequencedAddr() net.Addr {
	if q.seqLn == nil {
		return nil
	}
	return q.seqLn.Addr()
}

// startTimeout is how long a sequenced connection has to send its START
// before it is taken as START - next, as on the broadcasting sequenced
// listener (a variable for tests).
var startTimeout = 2 * time.Second

// errNoHistory is the answer to a START that asks for lines already fed.
var errNoHistory = errors.New("the sequenced listener is a work queue (broadcast.delivery: one), which keeps no history to resume from; send START - next")

// awaitStart reads a sequenced connection's START on a goroutine of its
// own, which Run waits for, and then admits it as a worker. Over
// MaxClients, counting the connections still starting, it is refused.
func (q *Queue) awaitStart(id uint64, conn net.Conn) {
	q.mu.Lock()
	if q.closed || (q.opts.MaxClients > 0 && len(q.workers)+len(q.starting) >= q.opts.MaxClients) {
		q.counts.refused++
		max := q.opts.MaxClients
		q.mu.Unlock()
		conn.Close()
		q.connLog(id).WithField("max_clients", max).Warn("Connection refused: max_clients workers are connected")
		return
	}
	q.starting[conn] = struct{}{}
	q.wg.Add(1)
	q.mu.Unlock()
	go func() {
		defer q.wg.Done()
		q.startSequenced(id, conn)
	}()
}

// startSequenced answers a sequenced connection's START, or refuses it
// with ERROR and the reason, and admits it as a worker.
func (q *Queue) startSequenced(id uint64, conn net.Conn) {
	req, err := readStart(conn, startTimeout)
	if err == nil && req.From != wire.FromNext {
		err = errNoHistory
	}
	q.mu.Lock()
	next := q.seq + 1
	if err != nil {
		q.counts.badStarts++
	}
	q.mu.Unlock()
	var answer []byte
	if err != nil {
		q.connLog(id).WithField("remote", conn.RemoteAddr().String()).WithError(err).Warn("Sequenced worker refused")
		answer = fmt.Appendf(answer, "%s %s\n", wire.ErrorWord, err)
	} else {
		if req.Stream != wire.AnyStream && req.Stream != q.stream {
			answer = fmt.Appendf(answer, "%s %s %s\n", wire.ChangedWord, req.Stream, q.stream)
		}
		answer = fmt.Appendf(answer, "%s %s %d\n", wire.StreamWord, q.stream, next)
	}
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, werr := conn.Write(answer)
	conn.SetWriteDeadline(time.Time{})
	q.mu.Lock()
	delete(q.starting, conn)
	q.mu.Unlock()
	if err != nil || werr != nil {
		conn.Close()
		return
	}
	q.admit(id, conn, Sequenced)
}

// readStart reads a sequenced connection's first line, within timeout: a
// connection that sends nothing in that time starts as START - next.
func readStart(conn net.Conn, timeout time.Duration) (wire.StartRequest, error) {
	conn.SetReadDeadline(time.Now().Add(timeout))
	defer conn.SetReadDeadline(time.Time{})
	line, err := readStartLine(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() && len(line) == 0 {
		return wire.StartRequest{Stream: wire.AnyStream, From: wire.FromNext}, nil
	}
	if err != nil {
		return wire.StartRequest{}, err
	}
	return wire.ParseStart(line)
}

// readStartLine reads one line, without its "\n", of at most
// wire.MaxStartLine bytes (and a "\r"), byte by byte, so that nothing
// after it is taken from the worker's reader; a START is a few dozen
// bytes, once per connection. On error it returns what it read.
func readStartLine(r io.Reader) ([]byte, error) {
	var buf [wire.MaxStartLine + 2]byte
	n := 0
	for {
		if n == len(buf) {
			return buf[:n], fmt.Errorf("%w: longer than %d bytes", wire.ErrStart, wire.MaxStartLine)
		}
		k, err := r.Read(buf[n : n+1])
		if k == 1 {
			if buf[n] == '\n' {
				return buf[:n], nil
			}
			n++
			continue
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return buf[:n], err
			}
			return buf[:n], fmt.Errorf("no START line: %w", err)
		}
	}
}

// parseSeqClientLine says what a sequenced worker's line is: ACK <seq>, a
// keep-alive, or anything else.
func parseSeqClientLine(line []byte) (wire.Kind, uint64) {
	if seq, ok := wire.ParseSeqAck(line); ok {
		return wire.Ack, seq
	}
	if bytes.Equal(wire.TrimCR(line), []byte(wire.KeepAlive)) {
		return wire.KeepAliveLine, 0
	}
	return wire.Other, 0
}

// ackSeqLocked completes the line numbered seq if the worker holds it and
// it was written to it. An ack of any other number is counted as
// mismatched and completes nothing: the line the worker meant stays held,
// and goes to another worker if it is never acknowledged.
func (w *worker) ackSeqLocked(seq uint64) {
	q := w.q
	for i := range w.written {
		it := w.inflight.at(i)
		if it.seq != seq {
			continue
		}
		w.inflight.removeAt(i)
		w.written--
		w.acked++
		q.counts.acked++
		q.doneLocked(it, true)
		return
	}
	w.mismatched++
	q.counts.mismatched++
	if w.mismatched == 1 {
		q.connLog(w.id).WithField("seq", seq).
			Warnf("Worker acknowledged line %d, which it does not hold; counting such acks, which complete nothing", seq)
	}
}
