// Package worker is chatty's built-in worker (chattyd worker), on the text
// protocol or, given the daemon's public key, the signed one; what it does
// on the wire is in docs/protocol.md, "Worker behaviour".
//
// Run ends with an *ExitError whose Code is ExitRestart when the worker's
// life is over for any reason other than cancellation: the lifetime
// elapsed, the server closed or refused the connection, a keep-alive went
// unanswered, or the server sent a line longer than MaxLineBytes. A
// cancelled context is a clean stop and returns nil.
package worker

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/chatty-dev/chatty/pkg/wire"
)

// ExitRestart is the exit code of a worker whose life ended normally and
// which the pool should replace, the code of the original child.
const ExitRestart = 2

// Why a worker's life ended; an *ExitError wraps one of them.
var (
	ErrLifetimeElapsed  = errors.New("lifetime elapsed")
	ErrConnect          = errors.New("cannot connect to the server")
	ErrServerClosed     = errors.New("server closed the connection")
	ErrConnection       = errors.New("connection to the server failed")
	ErrKeepAliveTimeout = errors.New("no KEEP_ALIVE_ACK within the keep-alive timeout")
	ErrLineTooLong      = errors.New("server sent a line longer than the limit")
	ErrVerify           = errors.New("the server's signed stream failed verification")
	ErrTLS              = errors.New("TLS handshake with the server failed")
	ErrNoKey            = errors.New("the server requires authentication and the worker has no key; give it one with --identity FILE")
)

// ExitError ends Run when the worker should exit with Code. Err says why
// and wraps one of the Err* values of this package.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }

// Unwrap returns the reason.
func (e *ExitError) Unwrap() error { return e.Err }

func restart(err error) *ExitError { return &ExitError{Code: ExitRestart, Err: err} }

// Options configures one worker. Every duration must be positive and each
// Max at least its Min.
type Options struct {
	Addr string // the broadcaster, host:port
	Slot int    // the pool slot, for logs only

	LifetimeMin, LifetimeMax   time.Duration
	KeepAliveMin, KeepAliveMax time.Duration
	// KeepAliveTimeout is how long the server has to answer a KEEP_ALIVE.
	KeepAliveTimeout time.Duration
	// PublicKey, when set, makes the worker speak the signed protocol and
	// verify the stream with this key (the daemon's identity).
	PublicKey ed25519.PublicKey
	// Key is the worker's own key, with which it answers a signed
	// listener's CHALLENGE; without it such a listener is refused.
	Key ed25519.PrivateKey
	// TLS, when set, connects with TLS (see package tlsconf).
	TLS *tls.Config
}

// validate reports the first invalid option.
func (o *Options) validate() error {
	if o.Addr == "" {
		return errors.New("no server address; pass --addr host:port")
	}
	if o.LifetimeMin <= 0 || o.LifetimeMax < o.LifetimeMin {
		return fmt.Errorf("lifetime range [%s, %s] is invalid; min must be positive and max at least min", o.LifetimeMin, o.LifetimeMax)
	}
	if o.KeepAliveMin <= 0 || o.KeepAliveMax < o.KeepAliveMin {
		return fmt.Errorf("keep-alive range [%s, %s] is invalid; min must be positive and max at least min", o.KeepAliveMin, o.KeepAliveMax)
	}
	if o.KeepAliveTimeout <= 0 {
		return fmt.Errorf("keep-alive timeout %s is invalid; it must be positive", o.KeepAliveTimeout)
	}
	return nil
}

// between returns a random duration in [lo, hi].
func between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Int64N(int64(hi-lo)+1))
}

// dialTimeout bounds the connection attempt.
const dialTimeout = 10 * time.Second

// readBufferSize is how much is read from the server at once; all the acks
// for one read go out in one write.
const readBufferSize = 256 << 10

// maxPendingAcks is how many bytes of acks may wait for the writer before
// the reader stops reading, so a server that does not read makes the
// worker wait instead of grow.
const maxPendingAcks = 1 << 20

// Run connects to opts.Addr and works until its lifetime ends, the
// connection fails or ctx is cancelled. See the package comment for what
// it returns. Invalid options give an error that is not an *ExitError.
func Run(ctx context.Context, opts Options, log *logrus.Entry) error {
	if err := opts.validate(); err != nil {
		return fmt.Errorf("worker options: %w", err)
	}
	lifetime := between(opts.LifetimeMin, opts.LifetimeMax)

	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		ee := restart(fmt.Errorf("%w %s: %w", ErrConnect, opts.Addr, err))
		log.Warnf("Exiting: %v", ee)
		return ee
	}
	if opts.TLS != nil {
		if conn, err = handshake(ctx, conn, opts.TLS); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return restart(fmt.Errorf("%w (%s): %w", ErrTLS, opts.Addr, err))
		}
	}
	log.Infof("Connected to %s; lifetime %s", opts.Addr, lifetime.Round(time.Millisecond))

	s := &session{conn: conn, log: log, acks: &acker{max: MaxLineBytes}, keepAlive: textKeepAlive}
	if opts.PublicKey != nil {
		v, err := signed.NewVerifier(opts.PublicKey, signed.VerifierOptions{})
		if err != nil {
			conn.Close()
			return fmt.Errorf("worker options: %w", err)
		}
		binding, err := tlsconf.Binding(conn)
		if err != nil {
			conn.Close()
			return restart(fmt.Errorf("%w: %w", ErrTLS, err))
		}
		s.acks, s.keepAlive = &signedAcker{v: v, key: opts.Key, binding: binding, log: log}, signed.AppendPing
	}
	s.out.cond.L = &s.out.mu
	err = s.run(ctx, opts, lifetime)
	switch {
	case err == nil:
		log.Info("Stopping: asked to")
	case errors.Is(err, ErrLifetimeElapsed):
		log.Infof("Exiting: lifetime of %s elapsed", lifetime.Round(time.Millisecond))
	default:
		s.exitLog(log, err).Warnf("Exiting: %v", err)
	}
	return err
}

// exitLog adds to log what the verifier counted when err is its rejection
// of the stream: the reason (as package signed names it, such as "gap"),
// the messages verified on this connection and the pending ones discarded
// unverified. Every rejection ends the worker, so this line counts it.
func (s *session) exitLog(log *logrus.Entry, err error) *logrus.Entry {
	sa, ok := s.acks.(*signedAcker)
	r := signed.ReasonOf(err)
	if !ok || r == 0 {
		return log
	}
	st := sa.v.Stats()
	return log.WithFields(logrus.Fields{"reason": r.String(), "verified": st.Verified, "discarded": st.Discarded})
}

// session is one connection's worth of work: a reader goroutine that turns
// received lines into acks, a writer goroutine that sends them, and the
// caller's goroutine, which owns both, the timers and the connection.
type session struct {
	conn net.Conn
	log  *logrus.Entry
	out  outbox
	// acks turns what the server sends into acknowledgements.
	acks ackMaker
	// keepAlive appends the n-th keep-alive.
	keepAlive func(dst []byte, n uint64) []byte
	// keepAliveAcks counts KEEP_ALIVE_ACK lines seen by the reader.
	keepAliveAcks atomic.Int64
}

// started reports whether keep-alives may be sent: always on the text
// protocol, once the stream has started on the signed one.
func (s *session) started() bool {
	if a, ok := s.acks.(*signedAcker); ok {
		return a.started()
	}
	return true
}

// outbox is the bytes waiting for the writer.
type outbox struct {
	mu     sync.Mutex // guards buf and closed
	cond   sync.Cond  // signalled when buf or closed changes; L is &mu
	buf    []byte
	closed bool
}

// push appends p for the writer; it never blocks on the network.
func (o *outbox) push(p []byte) {
	o.mu.Lock()
	o.buf = append(o.buf, p...)
	o.cond.Broadcast()
	o.mu.Unlock()
}

// close wakes and ends the writer and any reader waiting for room.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.cond.Broadcast()
	o.mu.Unlock()
}

var keepAliveLine = []byte(wire.KeepAlive + "\n")

func textKeepAlive(dst []byte, _ uint64) []byte { return append(dst, keepAliveLine...) }

// ackMaker reads the server's bytes, in pieces of any size, and appends
// the acknowledgements they call for to dst; it counts the keep-alive
// answers among them.
type ackMaker interface {
	feed(dst, p []byte) (out []byte, keepAliveAcks int, err error)
}

// signedAcker acknowledges every verified message of a signed stream by
// its sequence number, counts PONGs and answers the daemon's CHALLENGE.
type signedAcker struct {
	v        *signed.Verifier
	key      ed25519.PrivateKey // answers a CHALLENGE; nil: cannot
	binding  signed.Binding     // the connection's TLS channel binding
	log      *logrus.Entry
	anchored atomic.Bool // the ANCHOR has verified: the stream has started
}

// started reports whether the signed stream has started: before its
// ANCHOR (during authentication, say) a PING would be refused.
func (a *signedAcker) started() bool { return a.anchored.Load() }

func (a *signedAcker) feed(dst, p []byte) ([]byte, int, error) {
	pongs := 0
	var authErr error
	err := a.v.Feed(p, func(m *signed.Message) {
		switch m.Kind {
		case signed.KindPong:
			pongs++
		case signed.KindMessage, signed.KindChained:
			dst = signed.AppendAck(dst, m.Seq)
		case signed.KindChallenge:
			dst, authErr = a.answer(dst)
		}
	})
	if err != nil {
		return dst, pongs, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	if _, ok := a.v.Anchor(); ok {
		a.anchored.Store(true)
	}
	return dst, pongs, authErr
}

// answer appends the AUTH that answers the verified CHALLENGE.
func (a *signedAcker) answer(dst []byte) ([]byte, error) {
	if a.key == nil {
		return dst, ErrNoKey
	}
	ch, _ := a.v.Challenge()
	a.log.Debug("The server asks to authenticate; answering")
	return signed.AppendAuth(dst, a.key, ch, a.binding, time.Now())
}

// handshake runs the TLS handshake on conn, bounded by dialTimeout and ctx.
func handshake(ctx context.Context, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

func (s *session) run(ctx context.Context, opts Options, lifetime time.Duration) error {
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- s.read() }()
	go func() { defer wg.Done(); errc <- s.write() }()
	defer func() {
		s.conn.Close()
		s.out.close()
		wg.Wait()
	}()

	life := time.NewTimer(lifetime)
	defer life.Stop()
	send := time.NewTimer(between(opts.KeepAliveMin, opts.KeepAliveMax))
	defer send.Stop()
	// deadline fires when the oldest unanswered KEEP_ALIVE is due; it is
	// armed only while one is outstanding (its channel is nil otherwise).
	deadline := time.NewTimer(time.Hour)
	deadline.Stop()
	defer deadline.Stop()
	var deadlineC <-chan time.Time
	var sent []time.Time // send times of unanswered keep-alives, oldest first
	var sentTotal int64  // keep-alives sent so far

	// settle drops the keep-alives answered so far and re-arms deadline.
	settle := func(now time.Time) error {
		answered := s.keepAliveAcks.Load()
		if unanswered := sentTotal - answered; unanswered < int64(len(sent)) {
			sent = sent[int64(len(sent))-max(unanswered, 0):]
		}
		if len(sent) == 0 {
			deadlineC = nil
			return nil
		}
		due := sent[0].Add(opts.KeepAliveTimeout)
		if !now.Before(due) {
			return fmt.Errorf("%w (%s)", ErrKeepAliveTimeout, opts.KeepAliveTimeout)
		}
		deadline.Reset(due.Sub(now))
		deadlineC = deadline.C
		return nil
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-life.C:
			return restart(ErrLifetimeElapsed)
		case err := <-errc:
			return restart(err)
		case now := <-send.C:
			if !s.started() {
				// No keep-alive before the stream starts: a signed
				// listener takes nothing but the AUTH first.
				send.Reset(between(opts.KeepAliveMin, opts.KeepAliveMax))
				continue
			}
			sentTotal++
			s.out.push(s.keepAlive(nil, uint64(sentTotal)))
			sent = append(sent, now)
			s.log.Debug("<< KEEP_ALIVE")
			if deadlineC == nil {
				if err := settle(now); err != nil {
					return restart(err)
				}
			}
			send.Reset(between(opts.KeepAliveMin, opts.KeepAliveMax))
		case now := <-deadlineC:
			if err := settle(now); err != nil {
				return restart(err)
			}
		}
	}
}

// read reads the server's lines and queues their acks until the
// connection fails. It always returns a non-nil error.
func (s *session) read() error {
	buf := make([]byte, readBufferSize)
	a := s.acks
	for {
		n, err := s.conn.Read(buf)
		if n > 0 {
			o := &s.out
			o.mu.Lock()
			for len(o.buf) > maxPendingAcks && !o.closed {
				o.cond.Wait()
			}
			if o.closed {
				o.mu.Unlock()
				return ErrConnection
			}
			var kaa int
			var ferr error
			o.buf, kaa, ferr = a.feed(o.buf, buf[:n])
			o.cond.Broadcast()
			o.mu.Unlock()
			if kaa > 0 {
				s.keepAliveAcks.Add(int64(kaa))
				s.log.Debug(">> KEEP_ALIVE_ACK")
			}
			if ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return ErrServerClosed
		}
		if err != nil {
			return fmt.Errorf("%w: read: %w", ErrConnection, err)
		}
	}
}

// write sends whatever the outbox holds, one write per batch, until the
// outbox is closed or a write fails. It always returns a non-nil error.
func (s *session) write() error {
	o := &s.out
	var spare []byte
	o.mu.Lock()
	for {
		for len(o.buf) == 0 && !o.closed {
			o.cond.Wait()
		}
		if o.closed {
			o.mu.Unlock()
			return ErrConnection
		}
		batch := o.buf
		o.buf = spare[:0]
		o.cond.Broadcast() // room for a waiting reader
		o.mu.Unlock()

		_, err := s.conn.Write(batch)
		spare = batch

		o.mu.Lock()
		if err != nil {
			o.closed = true
			o.cond.Broadcast()
			o.mu.Unlock()
			return fmt.Errorf("%w: write: %w", ErrConnection, err)
		}
	}
}
