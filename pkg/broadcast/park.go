package broadcast

import (
	"sync"
	"time"
)

// A client holds no goroutine while it has nothing to do. Its writer
// parks when it has written everything: it leaves its cursor in the
// client, joins the server's parked writers and ends. Whatever gives it
// work again (a publish, an answer to send, the peer's end, the client's
// close, the log's close) first makes that visible, then takes the
// client off the parked list and starts a new writer goroutine. The
// writer checks for work under the list's lock before it parks, so either
// it sees the work or the waker sees it parked: nothing is missed, and at
// most one writer goroutine runs per client.
//
// The reader of a plain TCP client parks the same way, in the server's
// poller (see poll.go); other clients keep a reader goroutine blocked in
// Read. A client ends when both halves have ended (client.halfDone).

// parkedWriters are the clients whose writer is parked.
type parkedWriters struct {
	mu   sync.Mutex
	list []*client // each client's parkIdx is its index + 1
	// spare is a list a wakeAll emptied, kept for the next one: a busy
	// feed wakes the same clients at every publish.
	spare []*client
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

// wakeAll starts a writer for every parked client. The log calls it after
// each publish and at close.
func (p *parkedWriters) wakeAll() {
	p.mu.Lock()
	woken := p.list
	if len(woken) == 0 {
		p.mu.Unlock()
		return
	}
	p.list, p.spare = p.spare[:0], nil
	for _, c := range woken {
		c.parkIdx = 0
	}
	p.mu.Unlock()
	for _, c := range woken {
		go c.runWriter()
	}
	clear(woken) // keep no client alive through the spare list
	p.mu.Lock()
	if p.spare == nil {
		p.spare = woken[:0]
	}
	p.mu.Unlock()
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
// bytes to write, or the client's end to handle.
func (c *client) writerHasWork(cur cursor) bool {
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
	p := &c.srv.parked
	p.mu.Lock()
	parked := p.removeLocked(c)
	p.mu.Unlock()
	if parked {
		go c.runWriter()
	}
}

// runWriter runs the writer from where it parked until it parks again or
// the client ends.
func (c *client) runWriter() {
	cur := c.cur
	c.cur = cursor{} // chunks link forward: holding an old one would keep them all
	switch c.writeLoop(cur) {
	case writerParked:
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
