// Package broadcast fans feed lines out to TCP clients with the original
// chatty server's text protocol (see package wire) or, on a server made by
// NewSigned, as frames of the signed protocol (see package signed), or, on
// one made by NewWebSocket, as WebSocket messages (websocket.go).
//
// Lines are encoded once into a shared append-only log; every client has a
// cursor into it and a writer that sends everything between its cursor and
// the log's end in as few system calls as possible. A client that falls
// further behind than its queue limits is disconnected as a slow consumer,
// so one stalled client never slows the others nor grows memory without
// bound.
//
// An idle client holds no goroutine. Its writer runs only while there is
// something to write, then parks with its cursor until a publish (or an
// answer to send) runs it again; clients woken together by a publish run
// on the publisher's goroutine when they are few and the publish small,
// or else share a few goroutines. The reader of a plain TCP client waits
// in the server's epoll instance, not in a Read, and runs only when the
// client has sent something. Idle clients thus cost their connection and
// their state, rather than two goroutine stacks (see park.go and poll.go;
// docs/benchmarks.md, "Scale: idle clients", has the figure). TLS and signed clients keep a reader goroutine
// blocked in Read.
//
// The package runs on Linux only: parked readers wait in an epoll
// instance (epoll_linux.go), plain TCP clients are read and written with
// Linux system calls (rawio_linux.go), and a draining client's send
// queue is read with SIOCOUTQ. There is no fallback for other systems.
//
// # Locks
//
// These are the mutexes, and the order in which they may nest: a lock
// may be taken while holding only those left of it on its line.
//
//	Server.mu -> log.mu
//	Server.mu -> parkedWriters.mu -> client.answers.mu
//	client.acks.mu (never held with another)
//
// What each guards, and where they nest:
//
//   - Server.mu guards the list of clients and what is counted over it
//     (closed clients' acks, the clients authenticating, the scan
//     marks). Held, it admits a client, which joins the log (log.mu);
//     it disconnects clients (maybeScan, shutdown), which takes a parked
//     writer off its list (parkedWriters.mu); and DropRevoked asks the
//     KeySet, which may take a lock of its own (identity.Keyring).
//   - log.mu serialises appenders and guards the codec's state. Nothing
//     else is taken under it: publishers wake the parked writers after
//     unlocking it (log.wakeWriters).
//   - parkedWriters.mu guards the parked list and the writers' parkIdx.
//     A writer about to park checks under it that it has no work, which
//     reads its queued answers (client.answers.mu). Woken writers run
//     after it is unlocked (wakeAll).
//   - client.answers.mu guards one client's queued answers, and
//     client.acks.mu its ack matching. Neither is held while taking
//     another.
//
// No lock is held while a client is written to or read, nor while a
// half ends (endHalf takes Server.mu), so a publisher that runs woken
// writers on its own goroutine must hold none of these. The counters,
// the client's end and its progress are atomics, read without locks.
package broadcast

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// TCPKeepAlive is the TCP keep-alive of accepted connections: the first
// probe after Idle without traffic, then one every Interval, and the
// connection fails after Count unanswered probes. The zero value leaves
// connections as the listener made them.
type TCPKeepAlive struct {
	Idle     time.Duration
	Interval time.Duration
	Count    int
}

// UserTimeout is the TCP_USER_TIMEOUT that goes with k: Idle +
// Interval*Count, so that data left unacknowledged by a vanished peer
// fails the connection within the same bound as a silent one.
func (k TCPKeepAlive) UserTimeout() time.Duration {
	return k.Idle + k.Interval*time.Duration(k.Count)
}

// setTCPKeepAlive applies k to conn's TCP socket (under TLS, the
// connection it wraps).
func setTCPKeepAlive(conn net.Conn, k TCPKeepAlive) error {
	if k.Idle <= 0 {
		return nil
	}
	if w, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = w.NetConn()
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	if err := tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: k.Idle, Interval: k.Interval, Count: k.Count}); err != nil {
		return fmt.Errorf("set TCP keep-alive: %w", err)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return fmt.Errorf("set TCP_USER_TIMEOUT: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(k.UserTimeout().Milliseconds()))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("set TCP_USER_TIMEOUT: %w", err)
	}
	return nil
}

// Server is a broadcasting TCP server. Create it with New, run it with Run.
type Server struct {
	// Set before Run, read-only after.
	lns    []net.Listener // the first is the primary; more may be added before Run
	logger *logrus.Entry
	start  uint64        // sequence number of the first line
	signed *signedServer // set on a server of the signed protocol
	ws     *wsServer     // set on a server of WebSocket clients
	// sequenced is set on a server of the sequenced protocol: its
	// clients start where their START asks (resume.go).
	sequenced bool
	placer    func(net.Conn) Placement // where text clients start; nil: live
	ids       *ClientIDs               // numbers the clients; may be shared with other servers
	poller    *poller                  // set by Run; nil if the epoll instance could not be made

	lines  *log                   // the shared log; its own lock
	limits atomic.Pointer[Limits] // replaced whole by SetLimits
	parked parkedWriters          // the parked writers; their own lock

	mu       sync.Mutex // guards clients, authenticating, gone, the scan marks and draining
	clients  map[uint64]*client
	gone     Stats  // acks and unknown lines of clients that have left
	scanPos  uint64 // log position of the last slow-consumer scan
	scanSeq  uint64 // log sequence of the last slow-consumer scan
	draining bool
	starting int // sequenced clients whose START is awaited (awaitStart)
	// authenticating counts the clients whose auth.counted is set: those
	// admitted by a server that requires authentication, until they
	// authenticate or end.
	authenticating int

	// Counters, for Stats.
	connected     atomic.Int64
	accepted      atomic.Uint64
	refused       atomic.Uint64
	unauthRefused atomic.Uint64 // refusals over max_unauthenticated
	slow          atomic.Uint64
	idle          atomic.Uint64
	protocol      atomic.Uint64
	handshakes    atomic.Uint64
	undelivered   atomic.Uint64
	keepAlives    atomic.Uint64
	rejected      atomic.Uint64
	authFailed    atomic.Uint64
	rateLimited   atomic.Uint64
	resumed       atomic.Uint64
	gaps          atomic.Uint64
	gapLines      atomic.Uint64

	refusedLog   logLimiter // refusals over max_clients
	unauthLog    logLimiter // refusals over max_unauthenticated
	unknownLog   logLimiter // the first unknown line of each client
	keepAliveLog logLimiter // failures to set TCP keep-alive

	readBufs sync.Pool // *[]byte of pollBufSize, for the poller's readers
	rawIOs   sync.Pool // *rawIO, for reader passes and writer runs

	wg sync.WaitGroup // clients not yet finished, and refusals
}

// ErrAddrInUse is returned by Listen when the address is taken.
var ErrAddrInUse = errors.New("address already in use")

// Listen binds the broadcaster's TCP address. Go sets SO_REUSEADDR on
// listeners, so a restarted daemon binds at once.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen on %s: %w; is another chattyd running? Stop it or choose another address with --listen", addr, ErrAddrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// New returns a server of the text protocol that will accept clients on ln.
func New(ln net.Listener, limits Limits, logger *logrus.Entry) *Server {
	return newServer(ln, limits, textCodec{}, logger)
}

// NewSigned returns a server of the signed protocol that will accept
// clients on ln: every published line goes out as a signed Info message,
// every typed message (PublishMessage) as one of its type, and each client
// starts with its own ANCHOR. Its clients acknowledge
// messages by sequence number and keep alive with PING.
func NewSigned(ln net.Listener, limits Limits, o SignedOptions, logger *logrus.Entry) (*Server, error) {
	sc, err := newSignedCodec(o, logger)
	if err != nil {
		return nil, err
	}
	s := newServer(ln, limits, sc, logger)
	s.signed = &signedServer{enc: sc.enc, keys: o.Keys, window: o.TimestampWindow, auth: o.Authenticate,
		rate: o.UpstreamRate, burst: o.UpstreamBurst}
	return s, nil
}

// signedServer is what a signed server's clients share.
type signedServer struct {
	enc    *signed.Encoder // shared with the log's codec: only AppendResponse, AppendChallenge and StreamID here
	keys   signed.KeySet
	window time.Duration
	auth   bool    // clients must authenticate
	rate   float64 // client messages per second; 0: no limit
	burst  int
}

func newServer(ln net.Listener, limits Limits, cd codec, logger *logrus.Entry) *Server {
	s := &Server{
		lns:     []net.Listener{ln},
		logger:  logger,
		lines:   newLog(cd),
		clients: make(map[uint64]*client),
		ids:     new(ClientIDs),
		start:   1,
	}
	s.lines.wake = s.parked.wakeAll
	s.rawIOs.New = func() any { return newRawIO() }
	s.readBufs.New = func() any {
		b := make([]byte, pollBufSize)
		return &b
	}
	s.limits.Store(&limits)
	return s
}

// Addr returns the primary listener's address.
func (s *Server) Addr() net.Addr { return s.lns[0].Addr() }

// AddListener adds a listener whose clients share the same feed, such as a
// TLS listener (tls.NewListener). It must be called before Run.
func (s *Server) AddListener(ln net.Listener) { s.lns = append(s.lns, ln) }

// Addrs returns every listener's address, the primary first.
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr()
	}
	return out
}

// ClientIDs numbers clients from 1. Servers that share one (SetClientIDs)
// give their clients ids unique among them all, as one daemon's listeners
// should. The zero value is ready to use.
type ClientIDs struct{ last atomic.Uint64 }

func (ids *ClientIDs) next() uint64 { return ids.last.Add(1) }

// Next returns the next id, for a listener of the daemon that is no
// Server (the work queue).
func (ids *ClientIDs) Next() uint64 { return ids.next() }

// SetClientIDs makes s number its clients from ids. It must be called
// before Run.
func (s *Server) SetClientIDs(ids *ClientIDs) { s.ids = ids }

// SetLimits changes the limits; they apply to existing clients too.
func (s *Server) SetLimits(l Limits) { s.limits.Store(&l) }

// Limits returns the limits in force.
func (s *Server) Limits() Limits { return *s.limits.Load() }

// Publish queues lines to every connected client and returns the sequence
// number of the first. The slices may be reused once it returns.
func (s *Server) Publish(lines [][]byte) uint64 {
	if len(lines) == 0 {
		return s.lines.endSeq.Load()
	}
	if s.connected.Load() == 0 {
		s.undelivered.Add(uint64(len(lines)))
	}
	first := s.lines.append(lines)
	s.maybeScan()
	return first
}

// PublishMessage queues a typed message (one sent with chattyctl send) to
// every connected client, in order with the published lines, and returns
// its sequence number. A server of the text protocol sends the message's
// text line (message.Message.AppendText); a signed server sends a signed
// message of m.Type, at m.Time, whose payload is m.Text. A zero m.Time
// means now.
func (s *Server) PublishMessage(m message.Message) uint64 {
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
	if s.connected.Load() == 0 {
		s.undelivered.Add(1)
	}
	seq := s.lines.appendMessage(&m)
	s.maybeScan()
	return seq
}

// scanEveryBytes and scanEveryLines set how often Publish looks for slow
// consumers: a client may overshoot its limit by at most this much.
const (
	scanEveryBytes = 64 << 10
	scanEveryLines = 1024
)

// maybeScan disconnects clients lagging beyond their limits. It runs at
// most once per scanEvery bytes or lines published, so its cost per line
// is small whatever the number of clients.
//
// With retention on, a client still inside the retained part of the log
// costs no memory of its own, so it is a slow consumer only once it lags
// beyond its queue limits and has fallen behind the retained part too: a
// client that resumed far back catches up at its own speed, and none
// pins more than the retention plus a scan's worth of lines.
func (s *Server) maybeScan() {
	endPos, endSeq := s.lines.endPos.Load(), s.lines.endSeq.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Another publisher may have scanned past what this one published.
	if lag(endPos, s.scanPos) < scanEveryBytes && lag(endSeq, s.scanSeq) < scanEveryLines {
		return
	}
	s.scanPos, s.scanSeq = max(s.scanPos, endPos), max(s.scanSeq, endSeq)
	lim := s.limits.Load()
	tailPos := s.lines.retainedFrom()
	for _, c := range s.clients {
		if c.authPending() {
			// Its writer may not move before the client authenticates,
			// which the handshake timeout bounds: what it pins is kept.
			continue
		}
		lagBytes := lag(endPos, c.w.sentPos.Load())
		lagLines := lag(endSeq, c.w.sentSeq.Load())
		if (lagBytes > uint64(lim.QueueBytes) || lagLines > uint64(lim.QueueLines)) && !c.withinRetention(tailPos) {
			if c.disconnect(closeSlow) {
				c.log().WithField("queued_bytes", lagBytes).WithField("queued_lines", lagLines).
					Warn("Slow consumer: queue limit exceeded, disconnecting")
			}
		}
	}
}

// lag returns how far behind end a position is: 0 when it is not behind,
// as a writer can pass an end read a moment earlier.
func lag(end, pos uint64) uint64 {
	if pos >= end {
		return 0
	}
	return end - pos
}

// Run accepts clients until ctx is done, then stops accepting, lets every
// client drain what was published (within DrainTimeout), and closes them.
// It returns nil after every client has ended.
func (s *Server) Run(ctx context.Context) error {
	pollDone := s.startPoller()
	acceptDone := make(chan error, len(s.lns))
	stop := make(chan struct{}) // ends accept back-offs and the idle sweep
	var sweep sync.WaitGroup
	sweep.Go(func() { s.sweepIdle(stop) })
	for _, ln := range s.lns {
		go func() { acceptDone <- s.acceptLoop(ln, stop) }()
	}
	closeAll := func() {
		close(stop)
		for _, ln := range s.lns {
			ln.Close()
		}
	}

	var err error
	pending := len(s.lns)
	select {
	case <-ctx.Done():
	case err = <-acceptDone:
		// A listener failed on its own: stop them all.
		pending--
	}
	closeAll()
	for ; pending > 0; pending-- {
		if e := <-acceptDone; err == nil {
			err = e
		}
	}
	sweep.Wait()
	s.shutdown()
	if s.poller != nil {
		s.poller.close() // no client is left to arm it
		if e := <-pollDone; err == nil {
			err = e
		}
	}
	return err
}

// startPoller creates the poller that parked readers wait in and runs it;
// the channel returns its end. Should the epoll instance not be made (out
// of file descriptors, say), every client keeps a reader goroutine.
func (s *Server) startPoller() <-chan error {
	p, err := newPoller()
	if err != nil {
		s.logger.WithError(err).Warn("No poller for idle clients; each keeps a reader goroutine")
		return nil
	}
	s.poller = p
	done := make(chan error, 1)
	go func() {
		err := p.run(s.readReady)
		if err != nil {
			s.logger.WithError(err).Error("The poller failed: idle clients are no longer read")
		}
		done <- err
	}()
	return done
}

// acceptLoop accepts connections until the listener is closed. Temporary
// errors (out of file descriptors, say) back off, doubling up to a second,
// rather than spin.
func (s *Server) acceptLoop(ln net.Listener, stop <-chan struct{}) error {
	const minDelay, maxDelay = 5 * time.Millisecond, time.Second
	delay := time.Duration(0)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if delay == 0 {
				delay = minDelay
			} else if delay *= 2; delay > maxDelay {
				delay = maxDelay
			}
			s.logger.WithError(err).WithField("retry_in", delay).Error("Accept failed")
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-stop:
				t.Stop()
				return nil
			}
			continue
		}
		delay = 0
		s.admit(conn, ln.Addr())
	}
}

// refusal is the one line a client over max_clients receives.
const refusal = "ERROR too many clients (max_clients %d); try again later\n"

func (s *Server) admit(conn net.Conn, listener net.Addr) {
	if s.sequenced {
		s.beginStart(conn, listener)
		return
	}
	if s.ws != nil {
		at, other := s.wsStart(conn)
		s.admitAt(conn, listener, at, other, Placement{})
		return
	}
	var pl Placement
	if s.placer != nil {
		pl = s.placer(conn)
	}
	var at *seekStart
	if pl.From != 0 {
		at = &seekStart{seq: pl.From}
	}
	s.admitAt(conn, listener, at, "", pl)
}

// beginStart admits a sequenced client as far as reading its START, on a
// goroutine of its own (awaitStart). Clients awaited count against
// max_clients like those admitted.
func (s *Server) beginStart(conn net.Conn, listener net.Addr) {
	lim := s.limits.Load()
	s.mu.Lock()
	if s.draining || (lim.MaxClients > 0 && len(s.clients)+s.starting >= lim.MaxClients) {
		draining := s.draining
		s.mu.Unlock()
		s.refuse(conn, draining, lim.MaxClients)
		return
	}
	s.starting++
	s.wg.Add(1) // done by awaitStart
	s.mu.Unlock()
	go s.awaitStart(conn, listener, s.lines.endSeq.Load())
}

// admitAt admits a client that starts at the log's end, or where at says
// (a resuming client; other is the stream its numbers belonged to, when
// not this one).
func (s *Server) admitAt(conn net.Conn, listener net.Addr, at *seekStart, other string, pl Placement) {
	lim := s.limits.Load()
	needAuth := s.requiresAuth()
	s.mu.Lock()
	if needAuth && lim.MaxUnauthenticated > 0 && s.authenticating >= lim.MaxUnauthenticated && !s.draining {
		// Checked before max_clients: when both are reached, by a
		// flood most likely, this refusal is the cheaper one.
		s.mu.Unlock()
		s.refuseUnauthenticated(conn, lim.MaxUnauthenticated)
		return
	}
	if s.draining || (lim.MaxClients > 0 && len(s.clients)+s.starting >= lim.MaxClients) {
		draining := s.draining
		s.mu.Unlock()
		s.refuse(conn, draining, lim.MaxClients)
		return
	}
	c, err := newClient(s, s.ids.next(), conn, at, other)
	if err != nil {
		s.mu.Unlock()
		s.logger.WithError(err).WithField("remote", conn.RemoteAddr().String()).Error("Cannot start a connection; closing it")
		if s.sequenced {
			s.protocol.Add(1)
			conn.SetDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(conn, "ERROR %s\n", err)
		}
		if s.ws != nil {
			s.protocol.Add(1)
			conn.SetDeadline(time.Now().Add(time.Second))
			conn.Write(wsCloseFrame(wsPolicy, err.Error()))
		}
		conn.Close()
		return
	}
	c.listener = listener
	c.ended = pl.Ended
	s.clients[c.id] = c
	if c.auth.needed {
		c.auth.counted = true
		s.authenticating++
	}
	s.connected.Add(1)
	s.mu.Unlock()
	if pl.Started != nil {
		pl.Started(c.firstSeq.Load())
	}
	// Only for an admitted client: a refused one is closed at once.
	if err := setTCPKeepAlive(conn, lim.TCPKeepAlive); err != nil && s.keepAliveLog.allow() {
		// The client is served all the same; only a vanished peer
		// is noticed later, by the queue limits.
		s.logger.WithError(err).WithField("remote", conn.RemoteAddr().String()).Warn("Cannot set TCP keep-alive on a connection")
	}
	s.accepted.Add(1)
	entry := c.log()
	if c.firstSeq.Load() != s.lines.endSeq.Load() || at != nil {
		entry = entry.WithField("from", c.firstSeq.Load())
	}
	entry.Info("New connection established")
	s.wg.Add(1) // done by the client's endHalf
	c.start()
}

// refuse sends a connection over the limit its one error line and closes
// it, on a goroutine of its own: on a TLS listener the write waits for the
// client's handshake, which must never hold up accepting. Refusals are
// logged at most once a second, so that a flood of connections does not
// become a flood of log lines.
func (s *Server) refuse(conn net.Conn, draining bool, maxClients int) {
	n := s.refused.Add(1)
	if s.refusedLog.allow() {
		why := "too many clients"
		if draining {
			why = "shutting down"
		}
		s.logger.WithField("remote", conn.RemoteAddr().String()).WithField("max_clients", maxClients).
			WithField("refused_total", n).Warn("Connection refused: " + why)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		conn.SetDeadline(time.Now().Add(time.Second))
		if s.ws != nil {
			conn.Write(wsRefusal(draining, maxClients))
		} else {
			fmt.Fprintf(conn, refusal, maxClients)
		}
		conn.Close()
	}()
}

// logLimiter spaces the log lines of an event that can come in a flood,
// such as refused connections: one a second at most. The zero value is
// ready to use.
type logLimiter struct {
	last atomic.Int64 // when a line was last allowed, Unix nanoseconds
}

// allow reports whether a line may be logged now. Of callers racing for
// the same second, only one is allowed.
func (l *logLimiter) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last >= int64(time.Second) && l.last.CompareAndSwap(last, now)
}

// refuseUnauthenticated closes, at once and on the accepting goroutine, a
// connection that comes while MaxUnauthenticated clients are
// authenticating already. It is sent nothing, not even a CHALLENGE, and
// on TLS the handshake is not begun, so a flood of strangers costs no
// signature. Refusals are counted, and logged at most once a second.
func (s *Server) refuseUnauthenticated(conn net.Conn, max int) {
	n := s.unauthRefused.Add(1)
	if s.unauthLog.allow() {
		s.logger.WithField("remote", conn.RemoteAddr().String()).WithField("max_unauthenticated", max).
			WithField("unauthenticated_refused_total", n).
			Warn("Connection refused: too many clients authenticating already")
	}
	conn.Close()
}

// authDoneLocked takes c off the count of clients authenticating, once:
// when it authenticates, or when it ends without having done so.
func (s *Server) authDoneLocked(c *client) {
	if c.auth.counted {
		c.auth.counted = false
		s.authenticating--
	}
}

func (s *Server) remove(c *client) {
	s.mu.Lock()
	delete(s.clients, c.id)
	s.authDoneLocked(c)
	s.gone.AcksGood += c.acks.good.Load()
	s.gone.AcksMismatched += c.acks.bad.Load()
	s.gone.UnknownLines += c.r.unknown.Load()
	s.mu.Unlock()
	s.connected.Add(-1)
}

// shutdown drains and closes every client.
func (s *Server) shutdown() {
	lim := s.limits.Load()
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.lines.close()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	timer := time.NewTimer(lim.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	s.mu.Lock()
	n := len(s.clients)
	for _, c := range s.clients {
		c.disconnect(closeShutdown)
	}
	s.mu.Unlock()
	if n > 0 {
		s.logger.WithField("clients", n).Warn("Drain timeout: closing clients whose lines were not all delivered")
	}
	<-done
}
