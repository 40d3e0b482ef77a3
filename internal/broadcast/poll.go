package broadcast

import (
	"bytes"
	"net"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// A plain TCP client's reader holds no goroutine while the client sends
// nothing. It reads without blocking until the socket is empty, keeps an
// incomplete line in the client, returns its buffer to the server's pool,
// and parks: it arms the connection in the server's poller and ends. The
// poller runs the reader again when the client sends or leaves, on the
// goroutines it shares among the clients of one poll (inParallel), and
// the reader, having read everything, runs the writer if it queued
// answers; disconnect starts a goroutine to end the reader half. The idle
// timeout of these clients is a sweep (sweepIdle), as no read waits with
// a deadline.

// pollBufSize is the size of the pooled read buffers: larger than the
// default longest client line, so that they seldom grow.
const pollBufSize = 8 << 10

// pollPassBytes bounds what one pass of a reader reads before it parks
// again, so that a client that never stops sending does not keep the
// others of its share waiting (the poller reports it again at once).
const pollPassBytes = 64 << 10

// rawConn returns conn's raw connection when its reader can park in the
// poller: plain TCP clients of the text protocol. TLS connections buffer
// records of their own, so the descriptor's readiness does not tell
// whether a line is waiting; signed clients keep their reader too.
func (s *Server) rawConn(conn net.Conn) syscall.RawConn {
	tc, ok := conn.(*net.TCPConn)
	if !ok || s.poller == nil || s.signed != nil { // WebSocket clients are read by the poller too
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// startReader parks a new plain TCP client's reader in the poller, or
// starts a goroutine for it.
func (c *client) startReader() {
	if c.auth.needed && c.srv.ws != nil {
		go c.wsAuthRead() // blocked in reads until the client has authenticated
		return
	}
	if c.raw != nil {
		rio := c.srv.getRawIO()
		parked, _ := c.parkReader(rio)
		c.srv.putRawIO(rio)
		if parked {
			return
		}
	}
	go c.readRun()
}

// pollRead reads what the client sent until nothing is left, runs the
// writer if that queued answers, then parks the reader; or ends it when
// the client has left or is closed. It never waits.
func (c *client) pollRead() {
	rio := c.srv.getRawIO()
	defer c.srv.putRawIO(rio)
	for {
		c.r.inPass = true
		open := c.readAvailable(rio, false)
		c.r.inPass = false
		if c.r.wakeAfter {
			c.r.wakeAfter = false
			if c.unparkWriter() {
				c.runWriterNoWait()
			}
		}
		if !open {
			c.endReader()
			return
		}
		parked, err := c.parkReader(rio)
		if parked {
			return
		}
		if err != nil && c.reason.Load() == int32(closeNone) {
			// The poller refused the descriptor (out of epoll watches,
			// say): this client keeps a goroutine blocked in its reads.
			c.log().WithError(err).Warn("Cannot park the connection's reader; reading with a goroutine of its own")
			go c.readBlocked()
			return
		}
	}
}

// readBlocked reads on a goroutine blocked in the reads, until the end.
func (c *client) readBlocked() {
	rio := c.srv.getRawIO()
	defer c.srv.putRawIO(rio)
	c.readAvailable(rio, true)
	c.endReader()
}

// parkReader arms the client in the poller and reports whether the reader
// is parked. When it is not, the caller goes on reading: the client was
// closed meanwhile or could not be armed (err).
func (c *client) parkReader(rio *rawIO) (parked bool, err error) {
	// Parked first: the poller may report the client before arm returns.
	c.r.parked.Store(true)
	err = rio.armIn(c.srv.poller.epfd, c.raw, c.id)
	if err == nil && c.readerMayPark() {
		return true, nil
	}
	// disconnect may have seen the reader parked and started another one.
	if !c.r.parked.CompareAndSwap(true, false) {
		return true, nil
	}
	return false, err
}

// readerMayPark reports whether the reader may wait for the client: it is
// not closed, or it is a WebSocket client that is sent its close frame
// and whose connection is still open.
func (c *client) readerMayPark() bool {
	if c.srv.ws != nil {
		return !c.connClosed.Load()
	}
	return c.reason.Load() == int32(closeNone)
}

// wakeReader starts the client's reader if it is parked.
func (c *client) wakeReader() {
	if c.r.parked.CompareAndSwap(true, false) {
		go c.pollRead()
	}
}

// readReady runs the readers of the clients the poller reports.
func (s *Server) readReady(ids []uint64) {
	woken := make([]*client, 0, len(ids))
	s.mu.Lock()
	for _, id := range ids {
		if c := s.clients[id]; c != nil && c.r.parked.CompareAndSwap(true, false) {
			woken = append(woken, c)
		}
	}
	s.mu.Unlock()
	inParallel(woken, (*client).pollRead)
}

// readAvailable reads and handles the client's lines until its socket is
// empty (or pollPassBytes were read), or, when block is set, until the
// connection ends. It reports whether the client is still open for
// reading.
func (c *client) readAvailable(rio *rawIO, block bool) bool {
	s := c.srv
	pooled := s.readBufs.Get().(*[]byte)
	defer s.readBufs.Put(pooled)
	buf := *pooled
	if len(c.r.partial) >= len(buf) {
		buf = make([]byte, 2*len(c.r.partial))
	}
	start, end := 0, copy(buf, c.r.partial)
	c.r.partial = nil
	debug := s.logger.Logger.IsLevelEnabled(logrus.DebugLevel)
	for total := 0; ; {
		lim := s.limits.Load() // reload may change them
		if start > 0 {
			end = copy(buf, buf[start:end])
			start = 0
		}
		if need := c.maxInput(lim); end == len(buf) && len(buf) < need {
			nb := make([]byte, min(2*len(buf), need))
			end = copy(nb, buf[:end])
			buf = nb
		}
		if end == len(buf) { // a shorter MaxClientLine after a reload
			c.lineTooLong(lim.MaxClientLine)
			return false
		}
		n, err := rio.readRaw(c.raw, buf[end:], block)
		if n > 0 {
			c.r.lastRead.Store(time.Now().UnixNano())
			end += n
			if total += n; !block && total >= pollPassBytes && err == nil {
				err = syscall.EAGAIN // enough for one pass
			}
		}
		used, ok := c.handleInput(buf[start:end], lim, debug)
		if !ok {
			return false
		}
		start += used
		if err == syscall.EAGAIN {
			if end > start {
				c.r.partial = bytes.Clone(buf[start:end])
			}
			return true
		}
		if err != nil {
			c.readFailed(err)
			return false
		}
	}
}

// sweepIdle closes the clients read by the poller that, having sent a
// keep-alive once, sent nothing for IdleTimeout, until stop is closed. (The others time out by their read
// deadlines.)
func (s *Server) sweepIdle(stop <-chan struct{}) {
	for {
		t := time.NewTimer(sweepInterval(s.limits.Load().IdleTimeout))
		select {
		case <-stop:
			t.Stop()
			return
		case now := <-t.C:
			s.closeIdle(now)
			s.pingClients(now)
		}
	}
}

// sweepInterval returns how often to look for idle clients: a quarter of
// the timeout, so that a client is closed at most a quarter late, between
// 10 ms and a second.
func sweepInterval(idle time.Duration) time.Duration {
	if idle <= 0 {
		return time.Second
	}
	return min(max(idle/4, 10*time.Millisecond), time.Second)
}

// closeIdle closes the poller's clients that have sent a keep-alive once
// and nothing since IdleTimeout before now. Shutdown closes no client for idleness.
func (s *Server) closeIdle(now time.Time) {
	lim := s.limits.Load()
	if lim.IdleTimeout <= 0 || s.lines.closed.Load() {
		return
	}
	oldest := now.Add(-lim.IdleTimeout).UnixNano()
	var idle []*client
	s.mu.Lock()
	for _, c := range s.clients {
		if c.raw != nil && c.r.spoke.Load() && c.r.lastRead.Load() < oldest {
			idle = append(idle, c)
		}
	}
	s.mu.Unlock()
	for _, c := range idle {
		if c.r.lastRead.Load() < oldest {
			c.disconnectInline(closeIdle) // counted in claimClose
		}
	}
}
