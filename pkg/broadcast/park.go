package broadcast

import (
	"runtime"
	"sync"
	"time"
)

// A client holds no goroutine while it has nothing to do. Its writer
// parks when it has written everything: it leaves its cursor in the
// client, joins the server's parked writers and ends. Whatever gives it
// work again (a publish, an answer to send, the peer's end, the client's
// close, the log's close) first makes that visible, then takes the
// client off the parked list and runs the writer again. The writer checks
// for work under the list's lock before it parks, so either it sees the
// work or the waker sees it parked: nothing is missed, and the writer
// never runs twice at once.
//
// Clients woken together by a publish run on the publisher's goroutine
// when they are few and the publish small, or else on a few goroutines
// that share them (wakeAll, inParallel). A plain TCP client's writer there
// never waits for its socket, but hands a write that would wait to a
// goroutine of its own (finishWrite). A single wake (shut, or an answer queued by a TLS
// client's reader) starts a goroutine for that writer.
//
// The reader of a plain TCP client parks the same way, in the server's
// poller (see poll.go); other clients keep a reader goroutine blocked in
// Read. A client ends when both halves have ended (client.halfDone).

// parkedWriters are the clients whose writer is parked.
type parkedWriters struct {
	mu   sync.Mutex
	list []*client // each client's parkIdx is its index + 1
}

// addLocked parks c, which is not parked.
func (p *parkedWriters) addLocked(c *client) {
	p.list = append(p.list, c)
	c.parkIdx = len(p.list)
}

// removeLocked takes c off the list and reports whether it was parked.
func (p *parkedWriters) removeLocked(c *client) bool {
	i := c.parkIdx - 1
	if i < 0 {
		return false
	}
	last := len(p.list) - 1
	p.list[i] = p.list[last]
	p.list[i].parkIdx = i + 1
	p.list[last] = nil
	p.list = p.list[:last]
	c.parkIdx = 0
	return true
}

// wakeAll runs the writer of every parked client. The log calls it after
// each publish, with the number of bytes published, and at close.
//
// A few clients woken for a little data are run on the calling goroutine
// (the feed's, the control server's, or at shutdown the server's own,
// which closes the log), which must hold no lock a writer takes: their
// writes cost less than waking a thread for them would. When there is
// more to do, the caller hands it to other goroutines and goes on
// reading the feed while they write.
func (p *parkedWriters) wakeAll(published int) {
	p.mu.Lock()
	woken := p.list
	p.list = nil
	for _, c := range woken {
		c.parkIdx = 0
	}
	p.mu.Unlock()
	if len(woken) <= inlineClients && published <= inlineBytes {
		for _, c := range woken {
			c.runWriterNow()
		}
		return
	}
	inParallel(woken, (*client).runWriterNow)
}

// inlineClients and inlineBytes bound the writes wakeAll runs on the
// publisher's goroutine: about 30 µs of system calls at most.
const (
	inlineClients = 16
	inlineBytes   = 4 << 10
)

// inParallel calls run for each client on at most GOMAXPROCS goroutines,
// each taking its share in turn. It is for clients woken together (by a
// publish, or by one poll of the poller): run never waits, so one
// goroutine per client would only cost more. Every goroutine that ends
// leaves its descriptor to the runtime, which keeps it for reuse, so a
// burst of one goroutine per client would cost about 0.5 KiB per client
// for good.
func inParallel(cs []*client, run func(*client)) {
	n := min(len(cs), runtime.GOMAXPROCS(0))
	for i := range n {
		share := cs[i*len(cs)/n : (i+1)*len(cs)/n]
		go func() {
			for _, c := range share {
				run(c)
			}
		}()
	}
}

// startWriter parks the writer of a new client at its start, or starts it
// when there is something to write already (a signed client's anchor).
func (c *client) startWriter() {
	if !c.parkWriter(c.cur) {
		go c.runWriter()
	}
}

// parkWriter parks the writer at cur unless it has work; it reports
// whether it parked. The caller's goroutine must then end at once: a new
// writer may be running already.
func (c *client) parkWriter(cur cursor) bool {
	p := &c.srv.parked
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.writerHasWork(cur) {
		return false
	}
	c.cur = cur
	p.addLocked(c)
	return true
}

// writerHasWork reports whether the writer at cur has something to do:
// bytes to write, or the client's end to handle. A client yet to
// authenticate has nothing to be sent, only its end or the server's.
func (c *client) writerHasWork(cur cursor) bool {
	if c.authPending() {
		return c.reason.Load() != int32(closeNone) || c.srv.lines.closed.Load()
	}
	if data, _ := cur.next(); len(data) > 0 || len(c.preamble) > 0 {
		return true
	}
	c.answerMu.Lock()
	answers := c.nAnswers
	c.answerMu.Unlock()
	return answers > 0 || c.peerEOF.Load() || c.reason.Load() != int32(closeNone) || c.srv.lines.closed.Load()
}

// wakeWriter starts the client's writer if it is parked. Call it after
// making its work visible.
func (c *client) wakeWriter() {
	if c.takeWriter() {
		go c.runWriter()
	}
}

// readerWakesWriter wakes the writer for what the reader queued: answers,
// or the peer's end. A poller's reader runs the writer itself once it has
// read everything (pollRead), rather than start a goroutine.
func (c *client) readerWakesWriter() {
	if c.inPass {
		c.wakeAfter = true
		return
	}
	c.wakeWriter()
}

// takeWriter takes the client's writer off the parked list and reports
// whether it was parked: the caller must then run it.
func (c *client) takeWriter() bool {
	p := &c.srv.parked
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.removeLocked(c)
}

// takeCursor returns where the writer goes on and clears it, as chunks
// link forward: holding an old one would keep them all.
func (c *client) takeCursor() cursor {
	cur := c.cur
	c.cur = cursor{}
	return cur
}

// runWriter runs the writer from where it parked until it parks again or
// the client ends.
func (c *client) runWriter() {
	c.endWriter(c.writeLoop(c.takeCursor(), false))
}

// runWriterNow runs a woken writer on the calling goroutine without ever
// waiting: a plain TCP client's write that would wait, and whatever a
// TLS client's writer does, go on goroutines of their own.
func (c *client) runWriterNow() {
	if c.raw == nil {
		go c.runWriter()
		return
	}
	if end := c.writeLoop(c.takeCursor(), true); end == writerDrained {
		go c.endWriter(end) // it lingers
	} else {
		c.endWriter(end)
	}
}

// endWriter ends a run of the writer: nothing more to do when it parked or
// handed off, or else the end of the writer half.
func (c *client) endWriter(end writerEnd) {
	switch end {
	case writerParked, writerHandedOff:
		return
	case writerDrained:
		// Shutdown and everything written: half-close so the client sees
		// end of stream after the last line, then close once the client's
		// TCP has acknowledged every byte, or the client has left, or the
		// drain time is over. Closing earlier could reset the connection
		// (the client's acks arriving at a closed socket) and destroy
		// lines still in flight.
		if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite() // TCP FIN, or TLS close_notify
		}
		c.lingerUntilDelivered(time.Now().Add(c.srv.limits.Load().DrainTimeout))
	}
	c.shut(closeDrained)
	c.halfDone()
}

// halfDone ends the reader or the writer; the second to end finishes the
// client: off the server's list, logged, and no longer waited for.
func (c *client) halfDone() {
	if c.halves.Add(-1) != 0 {
		return
	}
	c.srv.remove(c)
	c.logClosed()
	c.srv.wg.Done()
}
