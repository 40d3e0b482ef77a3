package harness

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/signed"
)

// Tamper is what a SignedProxy does to one message frame of the daemon's
// signed stream.
type Tamper int

// The ways of tampering with a message frame.
const (
	// Drop leaves the frame out.
	Drop Tamper = iota + 1
	// Swap sends the frame just after the next message frame instead of
	// just before it; frames of other kinds between them keep their place.
	Swap
	// Replay sends the frame, then the same bytes again after the next
	// ReplayAfter message frames.
	Replay
	// Flip inverts the bits of the frame's last byte: the end of its
	// payload, when it has one.
	Flip
)

func (t Tamper) String() string {
	switch t {
	case Drop:
		return "drop"
	case Swap:
		return "swap"
	case Replay:
		return "replay"
	case Flip:
		return "flip"
	}
	return "Tamper(?)"
}

// ProxyOptions say which message frame a SignedProxy tampers with, and how.
type ProxyOptions struct {
	Tamper Tamper
	// Nth is the message frame tampered with, counting MESSAGE and
	// CHAINED frames only, from 1.
	Nth int
	// ReplayAfter is how many message frames pass between the frame and
	// its replay; 0 means 1.
	ReplayAfter int
}

// SignedProxy stands between one client and a signed listener. It cuts
// the daemon's stream into frames (with pkg/signed's Decoder) and tampers
// with one message frame as ProxyOptions say, passing every other frame
// unchanged and in order. The client's bytes go to the daemon unchanged;
// the proxy reads the ACK frames among them.
type SignedProxy struct {
	tb       testing.TB
	ln       net.Listener
	upstream string
	opts     ProxyOptions

	mu        sync.Mutex // guards conns, closed, acks, tampered and sawTamper
	conns     []net.Conn
	closed    bool
	acks      []uint64
	tampered  uint64
	sawTamper bool

	wg   sync.WaitGroup
	done chan struct{} // closed when the connection has ended both ways
}

// StartSignedProxy listens on 127.0.0.1 for one client, which it connects
// to upstream, a signed listener. The test's cleanup closes everything and
// waits for the proxy's goroutines.
func StartSignedProxy(tb testing.TB, upstream string, opts ProxyOptions) *SignedProxy {
	tb.Helper()
	if opts.Nth < 1 || opts.Tamper < Drop || opts.Tamper > Flip {
		tb.Fatalf("StartSignedProxy: invalid options %+v; want a Tamper and Nth from 1", opts)
	}
	if opts.ReplayAfter < 1 {
		opts.ReplayAfter = 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listen: %v", err)
	}
	p := &SignedProxy{tb: tb, ln: ln, upstream: upstream, opts: opts, done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.serve()
	}()
	tb.Cleanup(func() {
		ln.Close()
		p.closeConns()
		p.wg.Wait()
	})
	return p
}

// Addr returns the address the client should dial.
func (p *SignedProxy) Addr() string { return p.ln.Addr().String() }

// Acks returns the sequence numbers the client's ACK frames named so far,
// in the order sent.
func (p *SignedProxy) Acks() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acks)
}

// Tampered returns the sequence number of the message frame tampered
// with, once the proxy has seen it.
func (p *SignedProxy) Tampered() (seq uint64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tampered, p.sawTamper
}

// WaitClosed waits until the client's connection has ended both ways (the
// client closed it or the daemon did) and fails the test after timeout.
func (p *SignedProxy) WaitClosed(timeout time.Duration) {
	p.tb.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.tb.Fatalf("the proxy's connection is still open after %s", timeout)
	}
}

// serve proxies the first connection, then stops accepting.
func (p *SignedProxy) serve() {
	defer close(p.done)
	down, err := p.ln.Accept()
	p.ln.Close()
	if err != nil {
		return
	}
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		down.Close()
		p.tb.Errorf("proxy: dial %s: %v", p.upstream, err)
		return
	}
	if !p.track(down, up) {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.fromClient(down, up) }()
	go func() { defer wg.Done(); p.fromDaemon(up, down) }()
	wg.Wait()
}

// track records the connections for closeConns; it reports false, having
// closed them, when the proxy is closed already.
func (p *SignedProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	p.conns = cs
	return true
}

// closeConns closes the connections, which ends both copies, and any
// that track is given later.
func (p *SignedProxy) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
}

// fromClient copies the client's bytes to the daemon unchanged and
// records its ACKs. When the client's side ends, both connections close.
func (p *SignedProxy) fromClient(down, up net.Conn) {
	defer p.closeConns()
	dec := signed.NewDecoder(0)
	parsing := true
	buf := make([]byte, 32<<10)
	for {
		n, err := down.Read(buf)
		if n > 0 {
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
			if parsing {
				dec.Feed(buf[:n])
				parsing = p.readAcks(dec)
			}
		}
		if err != nil {
			return
		}
	}
}

// readAcks records the ACKs among the decoded frames. It reports false
// when the client's stream cannot be cut into frames, after which the
// proxy only copies it.
func (p *SignedProxy) readAcks(dec *signed.Decoder) bool {
	for {
		f, ok, err := dec.Next()
		if err != nil {
			p.tb.Errorf("proxy: the client's stream: %v", err)
			return false
		}
		if !ok {
			return true
		}
		if f.Kind == signed.KindAck && len(f.Body) == 8 {
			p.mu.Lock()
			p.acks = append(p.acks, binary.BigEndian.Uint64(f.Body))
			p.mu.Unlock()
		}
	}
}

// fromDaemon copies the daemon's stream to the client frame by frame,
// tampering with the chosen message frame. When it ends, both
// connections close.
func (p *SignedProxy) fromDaemon(up, down net.Conn) {
	defer p.closeConns()
	dec := signed.NewDecoder(0)
	t := tamperer{opts: p.opts, noted: p.noteTampered}
	buf := make([]byte, 64<<10)
	var out []byte
	for {
		n, err := up.Read(buf)
		dec.Feed(buf[:n])
		out = out[:0]
		for {
			f, ok, derr := dec.Next()
			if derr != nil {
				p.tb.Errorf("proxy: the daemon's stream: %v", derr)
				return
			}
			if !ok {
				break
			}
			out = t.frame(out, f)
		}
		if len(out) > 0 {
			if _, werr := down.Write(out); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			down.Write(t.held) // a swapped frame whose partner never came
			return
		}
	}
}

func (p *SignedProxy) noteTampered(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tampered, p.sawTamper = seq, true
}

// tamperer rewrites the sequence of frames; it is the proxy's logic
// without the network.
type tamperer struct {
	opts  ProxyOptions
	noted func(seq uint64) // called with the tampered frame's seq

	messages int    // message frames seen
	held     []byte // Swap: the frame waiting for the next message frame
	replay   []byte // Replay: the frame to send again
	replayAt int    // Replay: after which message frame
}

// frame appends what the client gets for f: f itself, nothing, or f
// with a held frame.
func (t *tamperer) frame(out []byte, f signed.Frame) []byte {
	if f.Kind != signed.KindMessage && f.Kind != signed.KindChained {
		return appendFrame(out, f.Kind, f.Body)
	}
	t.messages++
	if t.messages == t.opts.Nth {
		if len(f.Body) >= 8 {
			t.noted(binary.BigEndian.Uint64(f.Body))
		}
		switch t.opts.Tamper {
		case Drop:
			return out
		case Swap:
			t.held = appendFrame(nil, f.Kind, f.Body)
			return out
		case Replay:
			t.replay = appendFrame(nil, f.Kind, f.Body)
			t.replayAt = t.messages + t.opts.ReplayAfter
			return append(out, t.replay...)
		case Flip:
			out = appendFrame(out, f.Kind, f.Body)
			out[len(out)-1] ^= 0xff
			return out
		}
	}
	out = appendFrame(out, f.Kind, f.Body)
	if t.held != nil {
		out = append(out, t.held...)
		t.held = nil
	}
	if t.replay != nil && t.messages == t.replayAt {
		out = append(out, t.replay...)
		t.replay = nil
	}
	return out
}

// appendFrame appends a frame of kind with body: the header of
// docs/protocol.md ("Frames"), then the body.
func appendFrame(out []byte, kind signed.Kind, body []byte) []byte {
	out = append(out, signed.Magic, byte(kind))
	out = binary.BigEndian.AppendUint32(out, uint32(len(body)))
	return append(out, body...)
}
