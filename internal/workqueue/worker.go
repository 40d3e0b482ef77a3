package workqueue

import (
	"bytes"
	"errors"
	"io"
	"net"
	"time"

	"github.com/chatty-dev/chatty/pkg/wire"
	"github.com/sirupsen/logrus"
)

// worker is one connected worker. Its reader and writer goroutines are
// counted in Queue.wg.
type worker struct {
	q         *Queue
	id        uint64
	conn      net.Conn
	remote    string
	connected time.Time
	wake      chan struct{} // capacity 1: the writer has something to do
	done      chan struct{} // closed when the worker is dropped

	// Guarded by Queue.mu.
	inflight   ring[*item] // handed out, in order; acks match the front
	written    int         // how many of inflight, from the front, are written
	due        bool        // the writer has been woken for lines not yet written
	answers    int         // KEEP_ALIVE_ACK answers to write
	gone       bool        // dropped: its lines are back in the queue
	delivered  uint64
	acked      uint64
	mismatched uint64
	keepAlives uint64
	unknown    uint64
}

// admit starts serving a new connection, or refuses it over MaxClients.
func (q *Queue) admit(id uint64, conn net.Conn) {
	w := &worker{
		q: q, id: id, conn: conn, remote: conn.RemoteAddr().String(),
		connected: q.now(), wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	q.mu.Lock()
	if q.closed || (q.opts.MaxClients > 0 && len(q.workers) >= q.opts.MaxClients) {
		q.counts.refused++
		max := q.opts.MaxClients
		q.mu.Unlock()
		conn.Close()
		q.connLog(id).WithField("max_clients", max).Warn("Connection refused: max_clients workers are connected")
		return
	}
	ka := q.opts.TCPKeepAlive
	q.workers = append(q.workers, w)
	q.counts.accepted++
	q.roomChangedLocked()
	q.dispatchLocked()
	q.mu.Unlock()
	if tc, ok := conn.(*net.TCPConn); ok && ka.Idle > 0 {
		ka.Enable = true
		if err := tc.SetKeepAliveConfig(ka); err != nil {
			q.connLog(id).WithError(err).Debug("Cannot set TCP keep-alive")
		}
	}
	q.connLog(id).Info("New connection established")
	q.wg.Add(2)
	go func() { defer q.wg.Done(); w.readLoop() }()
	go func() { defer q.wg.Done(); w.writeLoop() }()
}

// wakeWriter makes the writer look for work.
func (w *worker) wakeWriter() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// dropLocked disconnects w, if not done already, and puts its
// unacknowledged lines back at the front of the queue, in order. The log
// line names them, so that what a dead worker held is on record.
func (q *Queue) dropLocked(w *worker, reason string, fields logrus.Fields) {
	if w.gone {
		return
	}
	w.gone = true
	close(w.done)
	for i, x := range q.workers {
		if x == w {
			q.workers = append(q.workers[:i], q.workers[i+1:]...)
			if q.turn > i {
				q.turn--
			}
			break
		}
	}
	if len(q.workers) > 0 {
		q.turn %= len(q.workers)
	} else {
		q.turn = 0
	}
	lost := w.inflight.takeAll()
	// Lines never written to it were not delivered; the others failed
	// and are suspects from now on (see item.suspect).
	for i, it := range lost {
		if i >= w.written {
			it.deliveries--
			w.delivered--
			continue
		}
		it.failures++
		it.suspect = true
	}
	f := logrus.Fields{"reason": reason, "acks_good": w.acked, "acks_mismatched": w.mismatched, "lines_delivered": w.delivered}
	for k, v := range fields {
		f[k] = v
	}
	log := q.connLog(w.id).WithFields(f)
	if len(lost) > 0 {
		log = log.WithField("requeued", seqRanges(lost))
	}
	log.Info("Connection closed")
	if reason == "ack timeout" {
		q.connLog(w.id).Warnf("Worker held line %d unacknowledged for over %s; %d lines go to other workers", lost[0].seq, q.opts.AckTimeout, len(lost))
	}
	q.requeueLocked(lost, q.now())
	q.roomChangedLocked()
	q.dispatchLocked()
	w.conn.Close()
}

// drop is dropLocked for the worker's own goroutines.
func (w *worker) drop(reason string) {
	w.q.mu.Lock()
	w.q.dropLocked(w, reason, nil)
	w.q.mu.Unlock()
}

// writeLoop writes the lines handed to the worker, and the answers to its
// keep-alives, in as few writes as it can, until the worker is dropped.
func (w *worker) writeLoop() {
	q := w.q
	var buf []byte
	for {
		select {
		case <-w.done:
			return
		case <-w.wake:
		}
		q.mu.Lock()
		if w.gone {
			q.mu.Unlock()
			return
		}
		buf = buf[:0]
		for ; w.answers > 0; w.answers-- {
			buf = append(buf, wire.KeepAliveAck...)
			buf = append(buf, '\n')
		}
		for i := w.written; i < w.inflight.len(); i++ {
			buf = append(buf, w.inflight.at(i).line...)
			buf = append(buf, '\n')
		}
		w.written = w.inflight.len()
		w.due = false
		q.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		if _, err := w.conn.Write(buf); err != nil {
			w.drop("write failed")
			return
		}
		q.mu.Lock()
		w.completeNoAckLocked()
		q.mu.Unlock()
		if cap(buf) > 1<<20 {
			buf = nil
		}
	}
}

// completeNoAckLocked completes the written lines at the front of the
// window that expect no ack (they read like KEEP_ALIVE_ACK).
func (w *worker) completeNoAckLocked() {
	for w.written > 0 && w.inflight.len() > 0 && w.inflight.at(0).noAck {
		w.q.doneLocked(w.inflight.popFront(), true)
		w.written--
		w.q.counts.acked++
	}
}

// readLoop reads the worker's lines until its connection ends, and
// applies the acks of each read at once.
func (w *worker) readLoop() {
	q := w.q
	q.mu.Lock()
	max := q.opts.MaxClientLine
	q.mu.Unlock()
	var sp splitter
	sp.max = max
	buf := make([]byte, 4096)
	var acks []int64
	for {
		n, err := w.conn.Read(buf)
		acks = acks[:0]
		keepAlives, unknown := 0, 0
		tooLong := sp.feed(buf[:n], func(line []byte) {
			switch kind, v := wire.ParseClientLine(line); kind {
			case wire.Ack:
				acks = append(acks, v)
			case wire.KeepAliveLine:
				keepAlives++
			default:
				unknown++
			}
		})
		if len(acks) > 0 || keepAlives > 0 || unknown > 0 {
			w.apply(acks, keepAlives, unknown)
		}
		switch {
		case tooLong:
			q.connLog(w.id).WithField("max_client_line", max).Warn("Client line too long, disconnecting")
			w.drop("line too long")
			return
		case errors.Is(err, io.EOF):
			w.drop("closed by peer")
			return
		case err != nil:
			w.drop("read failed")
			return
		}
	}
}

// apply matches acks against the oldest lines in flight, in order, and
// counts keep-alives (to answer) and unknown lines.
func (w *worker) apply(acks []int64, keepAlives, unknown int) {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.gone {
		return
	}
	if unknown > 0 {
		if w.unknown == 0 {
			q.connLog(w.id).Warn("Client line is neither an ack nor a keep-alive; counting and ignoring such lines")
		}
		w.unknown += uint64(unknown)
		q.counts.unknown += uint64(unknown)
	}
	if keepAlives > 0 {
		w.answers += keepAlives
		w.keepAlives += uint64(keepAlives)
		q.counts.keepAlives += uint64(keepAlives)
		w.wakeWriter()
	}
	var back []*item
	for _, n := range acks {
		w.completeNoAckLocked()
		if w.written == 0 {
			// It acknowledges a line never written to it.
			w.mismatched++
			q.counts.mismatched++
			continue
		}
		it := w.inflight.popFront()
		w.written--
		if int64(len(it.line)) == n {
			w.acked++
			q.counts.acked++
			q.doneLocked(it, true)
			continue
		}
		// A mismatched ack does not complete the line: it goes back for
		// another delivery.
		w.mismatched++
		q.counts.mismatched++
		it.failures++
		it.suspect = true
		back = append(back, it)
	}
	w.completeNoAckLocked()
	if len(back) > 0 {
		q.requeueLocked(back, q.now())
	}
	q.dispatchLocked()
}

// splitter cuts a stream of bytes into lines of at most max bytes (a
// trailing "\r" removed), whatever the reads that bring them.
type splitter struct {
	max  int
	part []byte // the start of a line cut by the end of a read
}

// feed calls fn for every complete line of p, after the bytes kept from
// earlier calls. It reports true, having stopped, at a line longer than
// max, complete or not; the line passed to fn is valid during the call only.
func (s *splitter) feed(p []byte, fn func(line []byte)) (tooLong bool) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(s.part)+len(p) > s.max+1 { // "+1": room for a "\r"
				return true
			}
			s.part = append(s.part, p...)
			return false
		}
		line := p[:i]
		if len(s.part) > 0 {
			s.part = append(s.part, line...)
			line = s.part
		}
		line = wire.TrimCR(line)
		if len(line) > s.max {
			return true
		}
		fn(line)
		s.part = s.part[:0]
		p = p[i+1:]
	}
	return false
}
