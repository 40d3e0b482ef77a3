package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chatty-dev/chatty/internal/clientopts"
	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// cmdWatch connects to the broadcaster as a plain client and copies what
// it receives to stdout, byte for byte, or with control characters
// escaped when stdout is a terminal. On the text protocol it sends
// KEEP_ALIVE every --keepalive, whose answers it does not print (see
// ackFilter), and no acknowledgement. It ends on interrupt (exit 0), when nobody reads
// stdout any more (watch | head; exit 0), or when the daemon closes the
// connection unasked (exit 1, saying why when it knows). With --signed it
// reads the signed listener and prints only the messages that verified
// with --pubkey, one per line.
func cmdWatch(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if ka := c.Duration("keepalive"); ka < 0 {
		return usagef("watch: --keepalive must not be negative, got %s; 0 sends no keep-alive", ka)
	}
	var pub ed25519.PublicKey
	protocol := "tcp"
	switch {
	case c.Bool("signed") && c.String("pubkey") == "":
		return usagef("watch: --signed needs --pubkey FILE, the daemon's public key (see chattyctl identity)")
	case c.Bool("signed"):
		var err error
		if pub, err = identity.LoadPublicKey(c.String("pubkey")); err != nil {
			return err
		}
		protocol = "signed"
	case c.IsSet("pubkey"):
		return usagef("watch: --pubkey is for --signed")
	}
	if c.Bool("tls") && protocol == "tcp" {
		protocol = "tls"
	}
	res, err := resumeOptions(c)
	if err != nil {
		return err
	}
	if res.set && protocol != "signed" {
		if c.Bool("tls") {
			return usagef("watch: the sequenced listener has no TLS; drop --tls")
		}
		protocol = "sequenced"
	}
	addr := c.String("addr")
	if addr == "" {
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		st, err := cl.Status(c.Context)
		if err != nil {
			return fmt.Errorf("find the broadcaster's address (or give --addr): %w", err)
		}
		for _, l := range st.Listeners {
			if l.Protocol == protocol || (protocol == "tcp" && l.Protocol == "") ||
				(protocol == "signed" && l.Protocol == "signed+tls") {
				addr = l.Addr
				if l.Protocol == "signed+tls" && !c.Bool("tls") {
					return usagef("watch: the signed listener %s uses TLS; add --tls and --pin FILE.pub (or --ca FILE)", l.Addr)
				}
				break
			}
		}
		if addr == "" && protocol == "signed" {
			return errors.New("chattyd reports no signed listener (broadcast.signed.listen); give --addr")
		}
		if addr == "" && protocol == "sequenced" {
			return errors.New("--from, --since and --state need the sequenced listener, which chattyd does not run: set broadcast.sequenced.listen (or give --addr)")
		}
		if addr == "" {
			return errors.New("chattyd reports no TCP listener; give --addr")
		}
	}
	tlsCfg, err := clientopts.TLS(c, addr)
	if err != nil {
		return watchOptionError(err)
	}
	key, err := clientopts.Key(c)
	if err != nil {
		return watchOptionError(err)
	}
	if key != nil && pub == nil {
		return usagef("watch: --identity authenticates to the signed listener; add --signed")
	}
	verbosef(c, "watching %s", addr)
	conn, err := dial(c.Context, addr, tlsCfg)
	if c.Context.Err() != nil {
		return nil // interrupted: the normal way to end a watch
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	// A reader of stdout that goes (watch | head) ends the watch: the
	// write fails with EPIPE rather than the process dying of SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	defer signal.Reset(syscall.SIGPIPE)
	stdout := &output{w: c.App.Writer}
	// Feed lines are often other programs' output: on a terminal their
	// control characters are shown escaped, not obeyed. A pipe gets the
	// bytes as they are.
	var out io.Writer = stdout
	if isTerminal(c.App.Writer) {
		ew := &escapingWriter{w: stdout}
		defer ew.Flush()
		out = ew
	}
	switch {
	case pub != nil:
		err = watchSigned(c.Context, conn, addr, pub, key, res, out, c.App.ErrWriter)
	case res.set:
		err = watchSequenced(c.Context, conn, addr, res, c.Duration("keepalive"), out, c.App.ErrWriter)
	default:
		err = watch(c.Context, conn, addr, c.Duration("keepalive"), out)
	}
	if stdout.closed() {
		return nil // nobody reads any more: the end of a pipeline, as for cat
	}
	return err
}

// output is watch's standard output. It keeps the first write error, to
// tell a reader that has gone from a failed connection.
type output struct {
	w   io.Writer
	err error
}

func (o *output) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if err != nil && o.err == nil {
		o.err = err
	}
	return n, err
}

// closed reports whether a write failed because nobody reads stdout any
// more: a pipe whose other end was closed.
func (o *output) closed() bool { return errors.Is(o.err, syscall.EPIPE) }

// errClosed is a connection the broadcaster closed without being asked:
// chattyd stopped, or closed an idle client (broadcast.idle_timeout).
func errClosed(addr string) error {
	return fmt.Errorf("%s closed the connection (chattyd stopped, or closed this client: its log says why)", addr)
}

func watchOptionError(err error) error {
	if _, ok := errors.AsType[*clientopts.UsageError](err); ok {
		return usagef("watch: %v", err)
	}
	return err
}

// dial connects to a broadcast listener, with TLS when cfg is set.
func dial(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to the broadcaster: %w", err)
	}
	if cfg == nil {
		return conn, nil
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS with %s: %w", addr, err)
	}
	return tc, nil
}

// watchSigned reads a signed listener and prints every message that
// verified with pub, one per line (see appendWatched). A stream that fails
// verification ends it with an error; nothing unverified is printed. A
// CHALLENGE is answered with key, or ends the watch if there is none.
// With res set it resumes (watchresume_signed.go).
func watchSigned(ctx context.Context, conn net.Conn, addr string, pub ed25519.PublicKey, key ed25519.PrivateKey, res resume, out, errOut io.Writer) error {
	v, err := signed.NewVerifier(pub, signed.VerifierOptions{})
	if err != nil {
		return err
	}
	rs, err := newSignedResume(res, v, errOut)
	if err != nil {
		return err
	}
	binding, err := tlsconf.Binding(conn)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	w := bufio.NewWriter(out)
	buf := make([]byte, 64<<10)
	var line []byte
	for {
		n, rerr := conn.Read(buf)
		challenged := false
		ferr := v.Feed(buf[:n], func(m *signed.Message) {
			switch m.Kind {
			case signed.KindMessage, signed.KindChained:
				line = appendWatched(line[:0], m)
				w.Write(line)
				rs.printed(m.Seq)
			case signed.KindChallenge:
				challenged = true
			case signed.KindResumed:
				rs.resumed(v)
			}
		})
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if err := rs.record(); err != nil {
			return err
		}
		if ferr != nil {
			return fmt.Errorf("%s: the stream failed verification, stopped before it: %w", addr, ferr)
		}
		if challenged {
			if err := authenticate(conn, v, key, binding); err != nil {
				return fmt.Errorf("%s: %w", addr, err)
			}
		}
		if err := rs.send(conn, v, challenged); err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(rerr, io.EOF):
			if _, challenged := v.Challenge(); challenged {
				if _, anchored := v.Anchor(); !anchored {
					return fmt.Errorf("%s refused our authentication (is the key of --identity in chattyd's identity.authorized_keys? chattyd's log says why)", addr)
				}
			}
			if err := v.Close(); err != nil {
				return fmt.Errorf("%s: %w", addr, err)
			}
			return errClosed(addr)
		case rerr != nil:
			return fmt.Errorf("watch %s: %w", addr, rerr)
		}
	}
}

// authenticate answers the verified CHALLENGE with key.
func authenticate(conn net.Conn, v *signed.Verifier, key ed25519.PrivateKey, binding signed.Binding) error {
	if key == nil {
		return errors.New("the signed listener requires authentication; give --identity FILE with a key of its authorized_keys")
	}
	ch, _ := v.Challenge()
	b, err := signed.AppendAuth(nil, key, ch, binding, time.Now())
	if err == nil {
		_, err = conn.Write(b)
	}
	if err != nil {
		return fmt.Errorf("authenticate: %w", err)
	}
	return nil
}

// appendWatched appends what watch --signed prints for a verified message:
// an Info message (a feed line) as its payload, a message of another type
// (chattyctl send) as the text line the text listener sends for it.
func appendWatched(dst []byte, m *signed.Message) []byte {
	if m.Type == message.Info {
		return append(append(dst, m.Payload...), '\n')
	}
	tm := message.Message{Type: m.Type, Text: string(m.Payload), Time: m.Time}
	return append(tm.AppendText(dst), '\n')
}

// watch copies what a text listener sends to out, until the connection
// ends: an error, as chattyd closed it unasked, unless ctx was cancelled.
// The listener's refusal, an ERROR line alone, is the error's reason.
// Every keepAlive (none when 0) it sends KEEP_ALIVE, so that a NAT or a
// firewall on the way keeps the connection, and the answers are not
// printed (ackFilter).
func watch(ctx context.Context, conn net.Conn, addr string, keepAlive time.Duration, out io.Writer) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	f := &ackFilter{out: out, atStart: true}
	if keepAlive > 0 {
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { f.keepAlive(conn, keepAlive, done) })
		defer func() {
			close(done)
			conn.SetWriteDeadline(time.Unix(1, 0)) // a write in progress returns
			wg.Wait()
		}()
	}
	var start streamStart
	_, err := io.Copy(f, io.TeeReader(conn, &start))
	if ferr := f.flush(); err == nil {
		err = ferr
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to end a watch
	}
	if err != nil {
		return fmt.Errorf("watch %s: %w", addr, err)
	}
	if why, ok := start.refusal(); ok {
		return fmt.Errorf("%s refused the connection: %q", addr, why)
	}
	return errClosed(addr)
}

// streamStart keeps the start of a stream, to find the listener's refusal:
// "ERROR too many clients (max_clients N); try again later\n", alone.
type streamStart struct {
	b []byte
	n int64 // bytes seen
}

func (f *streamStart) Write(p []byte) (int, error) {
	if room := 512 - len(f.b); room > 0 {
		f.b = append(f.b, p[:min(room, len(p))]...)
	}
	f.n += int64(len(p))
	return len(p), nil
}

// refusal returns the ERROR line, without its "\n", if it was all the
// stream held.
func (f *streamStart) refusal() (string, bool) {
	line, ok := bytes.CutSuffix(f.b, []byte("\n"))
	if !ok || int64(len(f.b)) != f.n || !bytes.HasPrefix(line, []byte("ERROR ")) || bytes.IndexByte(line, '\n') >= 0 {
		return "", false
	}
	return string(line), true
}

// keepAliveLine and keepAliveAckLine are the text protocol's keep-alive
// and its answer.
var (
	keepAliveLine    = []byte("KEEP_ALIVE\n")
	keepAliveAckLine = []byte("KEEP_ALIVE_ACK\n")
)

// ackFilter copies the text listener's stream to out without the answers
// to watch's keep-alives. A line that reads exactly KEEP_ALIVE_ACK is not
// printed while one of them is owed; as chattyd answers every keep-alive,
// as many such lines are printed as the feed held, none is lost, but a
// feed line that reads KEEP_ALIVE_ACK may come out where the answer was,
// a few lines from its place (the protocol's ambiguity, docs/protocol.md).
type ackFilter struct {
	out     io.Writer
	owed    atomic.Int64 // keep-alives sent and not yet answered
	atStart bool         // the next byte starts a line
	held    []byte       // the start of a line that may be an answer: a prefix of keepAliveAckLine
}

func (f *ackFilter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if !f.atStart {
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				_, err := f.out.Write(p)
				return n, err
			}
			if _, err := f.out.Write(p[:i+1]); err != nil {
				return n, err
			}
			p, f.atStart = p[i+1:], true
			continue
		}
		// At a line's start: hold the bytes while they may be an answer.
		k := len(f.held)
		if p[0] != keepAliveAckLine[k] {
			f.atStart = false
			if err := f.flush(); err != nil {
				return n, err
			}
			continue
		}
		f.held, p = append(f.held, p[0]), p[1:]
		if len(f.held) < len(keepAliveAckLine) {
			continue
		}
		if owed := f.owed.Load(); owed > 0 && f.owed.CompareAndSwap(owed, owed-1) {
			f.held = f.held[:0] // the answer to a keep-alive of ours
			continue
		}
		if err := f.flush(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// flush writes the bytes held.
func (f *ackFilter) flush() error {
	if len(f.held) == 0 {
		return nil
	}
	_, err := f.out.Write(f.held)
	f.held = f.held[:0]
	return err
}

// keepAlive sends KEEP_ALIVE on conn every interval until done is
// closed or a write fails (then the reader sees the connection end).
func (f *ackFilter) keepAlive(conn net.Conn, interval time.Duration, done <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		f.owed.Add(1)
		conn.SetWriteDeadline(time.Now().Add(interval))
		if _, err := conn.Write(keepAliveLine); err != nil {
			return
		}
	}
}
