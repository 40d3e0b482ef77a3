package broadcast

import (
	"net"
	"time"
)

// Limits are the settings that can change while the server runs.
type Limits struct {
	// MaxClients is the most clients connected at once; 0 means no limit.
	MaxClients int
	// MaxUnauthenticated is, on a server that requires
	// authentication, the most clients connected at once that have yet
	// to authenticate; 0 means no limit of their own (they count against
	// MaxClients, as they always do). A connection over it is closed at
	// once, sent nothing.
	MaxUnauthenticated int
	// IdleTimeout closes a client that has sent a keep-alive (KEEP_ALIVE,
	// or PING on a signed server) at least once and then sent nothing for
	// this long; 0 disables. A client that never sent one is never closed
	// for idleness: TCPKeepAlive and the queue limits end it when its
	// peer is gone.
	IdleTimeout time.Duration
	// TCPKeepAlive sets TCP keep-alive and TCP_USER_TIMEOUT on every
	// accepted connection, so that a silent client whose peer vanished is
	// closed. It applies to connections accepted after it is set.
	TCPKeepAlive TCPKeepAlive
	// MaxClientLine is the longest line a client may send.
	MaxClientLine int
	// MaxUnknownLines is how many lines that are neither an ack nor a
	// keep-alive a text client may send; the next closes it. 0 means no
	// limit: such lines are counted and otherwise ignored.
	MaxUnknownLines int
	// QueueBytes and QueueLines bound how far a client may lag the feed.
	QueueBytes int
	QueueLines int
	// DrainTimeout bounds how long shutdown waits for clients to catch up.
	DrainTimeout time.Duration
}

// Stats are the server's counters.
type Stats struct {
	Lines          uint64 // lines published
	Bytes          uint64 // bytes published, terminators included
	Undelivered    uint64 // lines published while no client was connected
	Connected      int    // clients connected now
	Authenticating int    // of which clients yet to authenticate
	Accepted       uint64 // connections accepted since start
	Refused        uint64 // connections refused over max_clients
	SlowConsumers  uint64 // clients disconnected for lagging too far
	IdleClosed     uint64 // clients closed for idleness
	Protocol       uint64 // clients closed for protocol violations (a line too long, too many unknown lines)
	Handshakes     uint64 // TLS clients that failed their handshake (mutual TLS included)
	AcksGood       uint64 // acks matching the line they acknowledge
	AcksMismatched uint64 // acks with a wrong length or for nothing sent
	KeepAlives     uint64 // keep-alives answered
	UnknownLines   uint64 // text client lines neither an ack nor a keep-alive
	Rejected       uint64 // signed frames from clients rejected (each closes its client)
	AuthFailed     uint64 // clients that failed the signed protocol's authentication
	RateLimited    uint64 // signed client messages refused over the client's rate

	// UnauthenticatedRefused counts connections refused because
	// MaxUnauthenticated clients were authenticating already.
	UnauthenticatedRefused uint64

	// Resumed counts clients that started at a sequence number (START,
	// a signed client's RESUME, or a pool slot's next worker); Gaps those of them told that lines
	// they asked for are no longer retained, and GapLines those lines.
	Resumed  uint64
	Gaps     uint64
	GapLines uint64
}

// Add adds o's counters to s, every one of them: the totals of a daemon's
// listeners. Lines, Bytes and Undelivered are summed too; for servers
// that publish the same feed, the caller may want the count of one of
// them instead (a line no client of either got is the smaller
// Undelivered).
func (s *Stats) Add(o Stats) {
	s.Resumed += o.Resumed
	s.Gaps += o.Gaps
	s.GapLines += o.GapLines
	s.Lines += o.Lines
	s.Bytes += o.Bytes
	s.Undelivered += o.Undelivered
	s.Connected += o.Connected
	s.Authenticating += o.Authenticating
	s.Accepted += o.Accepted
	s.Refused += o.Refused
	s.SlowConsumers += o.SlowConsumers
	s.IdleClosed += o.IdleClosed
	s.Protocol += o.Protocol
	s.Handshakes += o.Handshakes
	s.AcksGood += o.AcksGood
	s.AcksMismatched += o.AcksMismatched
	s.KeepAlives += o.KeepAlives
	s.UnknownLines += o.UnknownLines
	s.Rejected += o.Rejected
	s.AuthFailed += o.AuthFailed
	s.RateLimited += o.RateLimited
	s.UnauthenticatedRefused += o.UnauthenticatedRefused
}

// ClientInfo describes one connected client.
type ClientInfo struct {
	ID             uint64
	Remote         string
	ConnectedAt    time.Time
	QueueBytes     uint64 // bytes published but not yet written to it
	QueueLines     uint64 // lines published but not yet written to it
	AckLag         uint64 // lines written but not yet acknowledged
	LinesSent      uint64
	AcksGood       uint64
	AcksMismatched uint64
	KeepAlives     uint64 // keep-alives answered (written to it)
	UnknownLines   uint64 // lines it sent that were neither an ack nor a keep-alive
	// Key is the fingerprint of the key the client authenticated with on
	// a signed listener that requires it; empty otherwise.
	Key string
	// Listener is the address of the listener that accepted it.
	Listener net.Addr
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	endSeq := s.lines.endSeq.Load()
	st := Stats{
		Lines:         endSeq - s.start,
		Bytes:         s.lines.endPos.Load(),
		Undelivered:   s.undelivered.Load(),
		Connected:     int(s.connected.Load()),
		Accepted:      s.accepted.Load(),
		Refused:       s.refused.Load(),
		SlowConsumers: s.slow.Load(),
		IdleClosed:    s.idle.Load(),
		Protocol:      s.protocol.Load(),
		Handshakes:    s.handshakes.Load(),
		KeepAlives:    s.keepAlives.Load(),
		Rejected:      s.rejected.Load(),
		AuthFailed:    s.authFailed.Load(),
		RateLimited:   s.rateLimited.Load(),

		UnauthenticatedRefused: s.unauthRefused.Load(),

		Resumed:  s.resumed.Load(),
		Gaps:     s.gaps.Load(),
		GapLines: s.gapLines.Load(),
	}
	s.mu.Lock()
	st.AcksGood, st.AcksMismatched = s.gone.AcksGood, s.gone.AcksMismatched
	st.UnknownLines = s.gone.UnknownLines
	st.Authenticating = s.authenticating
	for _, c := range s.clients {
		st.AcksGood += c.acks.good.Load()
		st.AcksMismatched += c.acks.bad.Load()
		st.UnknownLines += c.r.unknown.Load()
	}
	s.mu.Unlock()
	return st
}

// Clients describes the connected clients, in no particular order.
func (s *Server) Clients() []ClientInfo {
	endPos, endSeq := s.lines.endPos.Load(), s.lines.endSeq.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ClientInfo, 0, len(s.clients))
	for _, c := range s.clients {
		sentSeq := c.w.sentSeq.Load()
		out = append(out, ClientInfo{
			ID:             c.id,
			Remote:         c.remote,
			ConnectedAt:    c.connectedAt,
			QueueBytes:     lag(endPos, c.w.sentPos.Load()),
			QueueLines:     lag(endSeq, sentSeq),
			AckLag:         lag(sentSeq, c.acks.nextSeq.Load()),
			LinesSent:      sentSeq - c.firstSeq.Load(),
			AcksGood:       c.acks.good.Load(),
			AcksMismatched: c.acks.bad.Load(),
			KeepAlives:     c.w.keepAlives.Load(),
			UnknownLines:   c.r.unknown.Load(),
			Key:            c.keyFingerprint(),
			Listener:       c.listener,
		})
	}
	return out
}

// ClientsByListener counts the connected clients by the address of the
// listener that accepted them.
func (s *Server) ClientsByListener() map[net.Addr]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[net.Addr]int)
	for _, c := range s.clients {
		out[c.listener]++
	}
	return out
}
