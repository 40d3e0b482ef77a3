package broadcast

import (
	"fmt"
	"net"
	"time"

	"github.com/chatty-dev/chatty/pkg/wire"
	"github.com/sirupsen/logrus"
)

// NewSequenced returns a server of the sequenced line protocol
// (docs/protocol.md, "The sequenced listener"): each client starts where
// its START line asks, within what the log retains, and is sent every
// line as "<seq> <line>".
func NewSequenced(ln net.Listener, limits Limits, logger *logrus.Entry) *Server {
	s := newServer(ln, limits, seqCodec{}, logger)
	s.sequenced = true
	return s
}

// SetRetention changes how much of the log the server keeps for clients
// that resume; it may be called at any time.
func (s *Server) SetRetention(r Retention) { s.lines.setRetention(r) }

// SetStream names the stream the server's sequence numbers belong to. It
// must be called before Run.
func (s *Server) SetStream(id string) { s.lines.stream = id }

// Stream returns the stream's identity.
func (s *Server) Stream() string { return s.lines.stream }

// SetStart makes seq the sequence number of the first line published. It
// must be called before Run and before anything is published.
func (s *Server) SetStart(seq uint64) {
	s.lines.head.firstSeq = seq
	s.lines.endSeq.Store(seq)
	s.start = seq
	if sc, ok := s.lines.codec.(*signedCodec); ok && seq > 1 {
		sc.skipTo(seq) // the signed messages take the stream's numbers
	}
}

// NextSeq returns the sequence number the next line published will have.
func (s *Server) NextSeq() uint64 { return s.lines.endSeq.Load() }

// Retained reports the range of the feed the server can still send.
func (s *Server) Retained() Retained { return s.lines.retained() }

// PublishAt publishes lines whose first has sequence number first. A
// first beyond the log's end leaves a gap, which clients resuming into it
// are told of; one behind it is refused with ErrSequence, and nothing is
// published.
func (s *Server) PublishAt(first uint64, lines [][]byte) error {
	if len(lines) == 0 {
		return nil
	}
	if s.connected.Load() == 0 {
		s.undelivered.Add(uint64(len(lines)))
	}
	if err := s.lines.appendAt(first, lines); err != nil {
		return err
	}
	s.maybeScan()
	return nil
}

// Placement says where a newly accepted client of the text protocol
// starts. The zero Placement starts it live, at the log's end.
type Placement struct {
	// From is the sequence number of the first line to send; 0 means live.
	From uint64
	// Started, when set, is called once the client is admitted, with the
	// first sequence number it will really be sent: more than From when
	// the log no longer held From.
	Started func(first uint64)
	// Ended, when set, is called once when the client has ended.
	Ended func(ClientEnd)
}

// ClientEnd is what a client had done when it ended.
type ClientEnd struct {
	// Acked is the sequence number of the last line it acknowledged, or
	// its first line's minus one if none.
	Acked uint64
	// Sent is the sequence number of the last line written to it, or its
	// first line's minus one if none.
	Sent uint64
}

// SetPlacer makes p decide where each newly accepted client starts. p
// runs on the accepting goroutine before the client is admitted, so it
// must be quick; it must be set before Run.
func (s *Server) SetPlacer(p func(net.Conn) Placement) { s.placer = p }

// joinAt returns a cursor where a resuming client starts, what the codec
// sends it first, and the lines it asked for that the log does not hold.
// other, when set, is the stream the client's numbers belonged to.
func (l *log) joinAt(at seekStart, other string) (cursor, joined, gapRange, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	res, err := l.seekLocked(at)
	if err != nil {
		return cursor{}, joined{}, gapRange{}, err
	}
	j, err := l.codec.resumeLocked(l, res.cur, res.gap, other)
	return res.cur, j, res.gap, err
}

// startTimeout is how long the sequenced listener waits for a client's
// START before it starts the client live (a variable for tests).
var startTimeout = 2 * time.Second

// awaitStart reads a sequenced client's START, on a goroutine of its own
// that the server's wait group counts, then admits the client where it
// asked. A client that sends nothing within startTimeout starts live
// from when it connected; one whose first line is no START is told why
// and closed.
func (s *Server) awaitStart(conn net.Conn, listener net.Addr, liveFrom uint64) {
	defer s.wg.Done()
	at, other, err := s.readStart(conn, liveFrom)
	s.mu.Lock()
	s.starting--
	s.mu.Unlock()
	if err != nil {
		s.protocol.Add(1)
		s.logger.WithField("remote", conn.RemoteAddr().String()).WithError(err).Warn("Sequenced client refused")
		conn.SetDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(conn, "%s %s\n", wire.ErrorWord, err)
		conn.Close()
		return
	}
	s.admitAt(conn, listener, &at, other, Placement{})
}

// readStart reads and interprets the client's first line.
func (s *Server) readStart(conn net.Conn, liveFrom uint64) (seekStart, string, error) {
	live := seekStart{seq: liveFrom}
	conn.SetReadDeadline(time.Now().Add(startTimeout))
	defer conn.SetReadDeadline(time.Time{})
	// Byte by byte, so that nothing after the line is taken from the
	// client's reader; a START is a few dozen bytes, once per connection.
	var buf [wire.MaxStartLine + 2]byte
	n := 0
	for {
		if n == len(buf) {
			return seekStart{}, "", fmt.Errorf("%w: longer than %d bytes", wire.ErrStart, wire.MaxStartLine)
		}
		k, err := conn.Read(buf[n : n+1])
		if k == 1 {
			if buf[n] == '\n' {
				break
			}
			n++
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() && n == 0 {
			return live, "", nil
		}
		if err != nil {
			return seekStart{}, "", fmt.Errorf("no START line: %w", err)
		}
	}
	req, err := wire.ParseStart(buf[:n])
	if err != nil {
		return seekStart{}, "", err
	}
	ours := req.Stream == wire.AnyStream || req.Stream == s.lines.stream
	var other string
	if !ours {
		other = req.Stream
	}
	switch {
	case req.From == wire.FromNext:
		return live, other, nil
	case req.From == wire.FromFirst || !ours:
		// Numbers of another stream mean nothing here: the client is
		// told (CHANGED) and given this stream from its oldest line.
		return seekStart{first: true}, other, nil
	case req.From == wire.FromSince:
		return seekStart{since: max(req.Since.UnixNano(), 1)}, other, nil
	}
	return seekStart{seq: req.Seq}, other, nil
}
