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
// goroutine of its own (finishWrite). A single wake (disconnect, or an answer queued by a TLS
// client's reader) starts a goroutine for that writer.
//
// The reader of a plain TCP client parks the same way, in the server's
// poller (see poll.go); other clients keep a reader goroutine blocked in
// Read. A client ends when both halves have ended (client.endHalf).
//
// The verbs of a client's life:
//
//   - disconnect closes the client for a reason and makes both halves
//     end, a parked one on a goroutine of its own; disconnectInline does
//     the same on the caller's goroutine. Both start with markClosed,
//     which records the reason and closes the connection.
//   - wakeWriter runs a parked writer that has work, on a goroutine of
//     its own; wakeWriterFromReader is the reader's, which a poller's
//     reader defers to the end of its pass.
//   - unparkWriter takes a parked writer off the list; its caller then
//     runs it with runWriter (waiting for the socket) or runWriterNoWait
//     (never waiting).
//   - endWriterRun acts on how a writer's run ended, and endReader ends
//     the reader; both then call endHalf, the second of which finishes
//     the client.

// parkedWriters are the clients whose writer is parked.
type parkedWriters struct {
	mu   sync.Mutex
	list []*client // each client's parkIdx is its index + 1
}

// addLocked parks c, which is not parked.
func (p *parkedWriters) addLocked(c *client) {
	p.list = append(p.list, c)
	c.w.parkIdx = len(p.list)
}

// removeLocked takes c off the list and reports whether it was parked.
func (p *parkedWriters) removeLocked(c *client) bool {
	i := c.w.parkIdx - 1
	if i < 0 {
		return false
	}
	last := len(p.list) - 1
	p.list[i] = p.list[last]
	p.list[i].w.parkIdx = i + 1
	p.list[last] = nil
	p.list = p.list[:last]
	c.w.parkIdx = 0
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
		c.w.parkIdx = 0
	}
	p.mu.Unlock()
	if len(woken) <= inlineClients && published <= inlineBytes {
		for _, c := range woken {
			c.runWriterNoWait()
		}
		return
	}
	inParallel(woken, (*client).runWriterNoWait)
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
	if !c.parkWriter(c.w.cur) {
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
	c.w.cur = cur
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
	if data, _ := cur.next(); len(data) > 0 || len(c.w.preamble) > 0 || c.w.restart.Load() != nil {
		return true
	}
	return c.answers.pending() > 0 || c.peerEOF.Load() || c.reason.Load() != int32(closeNone) || c.srv.lines.closed.Load()
}

// wakeWriter starts the client's writer on a goroutine of its own if it
// is parked, and does nothing if it is running. Call it after making its
// work visible; it may be called with any lock but parkedWriters.mu held.
func (c *client) wakeWriter() {
	if c.unparkWriter() {
		go c.runWriter()
	}
}

// wakeWriterFromReader is wakeWriter for the reader, after it queued
// answers or saw the peer's end. During a pass of a poller's reader it
// only notes the wake: the pass runs the writer on its own goroutine
// once it has read everything (pollRead), rather than start one.
func (c *client) wakeWriterFromReader() {
	if c.r.inPass {
		c.r.wakeAfter = true
		return
	}
	c.wakeWriter()
}

// unparkWriter takes the client's writer off the parked list and reports
// whether it was parked. It runs nothing: a caller that gets true owns
// the writer and must run it (runWriter or runWriterNoWait).
func (c *client) unparkWriter() bool {
	p := &c.srv.parked
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.removeLocked(c)
}

// takeCursor returns where the writer goes on and clears it, as chunks
// link forward: holding an old one would keep them all.
func (c *client) takeCursor() cursor {
	cur := c.w.cur
	c.w.cur = cursor{}
	return cur
}

// runWriter runs an unparked writer on the calling goroutine from where
// it parked until it parks again or the client ends, waiting for the
// socket as long as writes take.
func (c *client) runWriter() {
	c.endWriterRun(c.writeLoop(c.takeCursor(), false))
}

// runWriterNoWait runs an unparked writer like runWriter, but never
// waits: a plain TCP client's write that would wait, the linger of a
// drained client, and whatever a TLS client's writer does, go on
// goroutines of their own. It is for goroutines that run many writers
// (wakeAll, pollRead).
func (c *client) runWriterNoWait() {
	if c.raw == nil {
		go c.runWriter()
		return
	}
	if end := c.writeLoop(c.takeCursor(), true); end == writerDrained {
		go c.endWriterRun(end) // it lingers
	} else {
		c.endWriterRun(end)
	}
}

// endWriterRun acts on how a run of the writer ended: nothing when it
// parked or handed its write off; else the writer half ends, after a
// drained client's linger, and the client is closed if it is not yet.
func (c *client) endWriterRun(end writerEnd) {
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
		linger := c.srv.limits.Load().DrainTimeout
		if c.srv.ws != nil && c.reason.Load() != int32(closeDrained) {
			linger = wsCloseGrace // closed for a reason of its own
		}
		c.lingerUntilDelivered(time.Now().Add(linger))
	}
	c.disconnect(closeDrained)
	if c.srv.ws != nil && c.closeConn() {
		// The writer closes a WebSocket client's connection, after its
		// close frame; a reader parked in the poller is not told.
		c.wakeReader()
	}
	c.endHalf()
}

// endHalf counts the end of the reader or the writer; the second to end
// finishes the client: off the server's list, logged, and no longer
// waited for. It closes nothing itself.
func (c *client) endHalf() {
	if c.halves.Add(-1) != 0 {
		return
	}
	c.srv.remove(c)
	c.logClosed()
	if c.ended != nil {
		c.ended(ClientEnd{Acked: c.acks.lastGood.Load(), Sent: c.w.sentSeq.Load() - 1})
	}
	c.srv.wg.Done()
}
