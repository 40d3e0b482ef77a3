package broadcast

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/pkg/wire"
	"github.com/chatty-dev/chatty/test/harness"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// startLoggedServer runs a server whose log the test reads, with a
// plain listener and a TLS one (whose clients are read by a goroutine
// rather than the poller); it returns the TLS listener's address.
func startLoggedServer(t *testing.T, lim Limits) (*Server, *logtest.Hook, string, *harness.PKI) {
	t.Helper()
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.InfoLevel)
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pki := harness.NewPKI(t)
	tc, err := tlsconf.NewServer(tlsconf.ServerFiles{CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	tln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, lim, logrus.NewEntry(logger))
	s.AddListener(tls.NewListener(tln, tc.Config()))
	runServer(t, s)
	return s, hook, tln.Addr().String(), pki
}

// lineClient is a client of either listener that writes and reads lines.
type lineClient struct {
	id uint64
	tc *testClient
}

// dialKind connects a plain client or, with useTLS, a TLS one, and
// returns it with its connection id, once the server has it.
func dialKind(t *testing.T, s *Server, tlsAddr string, pki *harness.PKI, useTLS bool) lineClient {
	t.Helper()
	before := map[uint64]bool{}
	for _, ci := range s.Clients() {
		before[ci.ID] = true
	}
	var tc *testClient
	if useTLS {
		c, r, err := dialTLS(t, tlsAddr, &tls.Config{RootCAs: pki.CA})
		if err != nil {
			t.Fatal(err)
		}
		tc = &testClient{Conn: c, r: r}
	} else {
		tc = dial(t, s)
	}
	var id uint64
	poll.Eventually(t, wait, func() bool {
		for _, ci := range s.Clients() {
			if !before[ci.ID] {
				id = ci.ID
				return true
			}
		}
		return false
	}, "the client registered")
	return lineClient{id: id, tc: tc}
}

// send writes lines, then a KEEP_ALIVE, and reads, past any feed
// lines, the answers to every keep-alive among them: every line has been
// handled by then.
func (c lineClient) send(t *testing.T, lines ...string) {
	t.Helper()
	lines = append(lines, "KEEP_ALIVE")
	if _, err := io.WriteString(c.tc, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if kind, _ := wire.ParseClientLine([]byte(l)); kind == wire.KeepAliveLine {
			for c.tc.readLine(t) != "KEEP_ALIVE_ACK" {
			}
		}
	}
}

func clientInfo(t *testing.T, s *Server, id uint64) ClientInfo {
	t.Helper()
	for _, ci := range s.Clients() {
		if ci.ID == id {
			return ci
		}
	}
	t.Fatalf("connection %d is not connected", id)
	return ClientInfo{}
}

// entries returns the log entries whose message contains msg.
func entries(hook *logtest.Hook, msg string) []logrus.Entry {
	var out []logrus.Entry
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, msg) {
			out = append(out, *e)
		}
	}
	return out
}

const unknownLogged = "neither an ack nor a keep-alive; counting"

// Lines that are neither acks nor keep-alives are counted for their
// client and in the total, over both kinds of reader, and stay in the
// total once their client has left; acks and keep-alives are not.
func TestUnknownLinesCounted(t *testing.T) {
	s, _, tlsAddr, pki := startLoggedServer(t, testLimits())
	publish(s) // nothing to ack yet: an ACK_RECEIVED now is mismatched, not unknown
	plain := dialKind(t, s, tlsAddr, pki, false)
	overTLS := dialKind(t, s, tlsAddr, pki, true)
	plain.send(t, "hello", "", "ACK_RECEIVED x", "ACK_RECEIVED 5", "KEEP_ALIVE\r", "ack_received 5")
	overTLS.send(t, "KEEP_ALIVE_ACK")
	if got := clientInfo(t, s, plain.id).UnknownLines; got != 4 {
		t.Errorf("plain client: %d unknown lines, want 4 (hello, the empty line, ACK_RECEIVED x, ack_received 5)", got)
	}
	if got := clientInfo(t, s, overTLS.id).UnknownLines; got != 1 {
		t.Errorf("TLS client: %d unknown lines, want 1", got)
	}
	if got := s.Stats().UnknownLines; got != 5 {
		t.Errorf("Stats: %d unknown lines, want 5", got)
	}
	plain.tc.Close()
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 1 }, "the plain client gone")
	if got := s.Stats().UnknownLines; got != 5 {
		t.Errorf("after the plain client left: %d unknown lines, want 5", got)
	}
}

// The first unknown line of a connection is logged, once; the next
// connection's first is logged too, unless it comes within a second of
// the last such log line.
func TestUnknownLineLoggedOncePerConnection(t *testing.T) {
	s, hook, tlsAddr, pki := startLoggedServer(t, testLimits())
	first := dialKind(t, s, tlsAddr, pki, false)
	first.send(t, "garbage one", "garbage two", "garbage three")
	logged := entries(hook, unknownLogged)
	if len(logged) != 1 {
		t.Fatalf("%d log lines for a connection's unknown lines, want 1: %v", len(logged), logged)
	}
	if e := logged[0]; e.Data[logging.FieldConnection] != first.id || e.Data["line"] != "garbage one" || e.Level != logrus.WarnLevel {
		t.Errorf("logged %v at %s, want the first line of connection %d as a warning", e.Data, e.Level, first.id)
	}

	// Within the same second, another connection's first is not logged.
	quiet := dialKind(t, s, tlsAddr, pki, true)
	s.unknownLog.last.Store(time.Now().UnixNano())
	quiet.send(t, "garbage from the second")
	if n := len(entries(hook, unknownLogged)); n != 1 {
		t.Errorf("%d log lines after a second connection within the second, want 1", n)
	}

	// A second later, a connection's later unknown lines are still not
	// logged, but the next connection's first is.
	s.unknownLog.last.Add(-int64(time.Second))
	first.send(t, "garbage four")
	third := dialKind(t, s, tlsAddr, pki, false)
	third.send(t, "garbage from the third", "more")
	logged = entries(hook, unknownLogged)
	if len(logged) != 2 || logged[1].Data[logging.FieldConnection] != third.id {
		t.Errorf("log lines %v, want a second one for connection %d only", logged, third.id)
	}
	if got := s.Stats().UnknownLines; got != 7 {
		t.Errorf("%d unknown lines counted, want 7: logging less counts no less", got)
	}
}

// With max_unknown_lines N, a client is closed at its unknown line N+1,
// with a logged reason, and counted as a protocol violation; a client
// that sends many acks and keep-alives is never counted. The limit
// applies to connected clients as soon as it is set.
func TestMaxUnknownLinesDisconnects(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "plain"
		if useTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			lim := testLimits()
			lim.MaxUnknownLines = 3
			s, hook, tlsAddr, pki := startLoggedServer(t, lim)
			good := dialKind(t, s, tlsAddr, pki, useTLS)
			bad := dialKind(t, s, tlsAddr, pki, useTLS)

			publish(s, "one", "three", "seven13")
			for _, want := range []string{"one", "three", "seven13"} {
				if got := good.tc.readLine(t); got != want {
					t.Fatalf("good client read %q, want %q", got, want)
				}
			}
			good.send(t, "ACK_RECEIVED 3", "KEEP_ALIVE", "ACK_RECEIVED 5", "KEEP_ALIVE\r", "ACK_RECEIVED 7\r", "KEEP_ALIVE")
			if ci := clientInfo(t, s, good.id); ci.UnknownLines != 0 || ci.AcksGood != 3 {
				t.Errorf("good client: %d unknown lines, %d good acks; want 0 and 3", ci.UnknownLines, ci.AcksGood)
			}

			bad.send(t, "x", "y", "z") // three: at the limit, still served
			if got := clientInfo(t, s, bad.id).UnknownLines; got != 3 {
				t.Fatalf("%d unknown lines, want 3", got)
			}
			io.WriteString(bad.tc, "one too many\n")
			bad.tc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if line, err := bad.tc.r.ReadString('\n'); err == nil {
				t.Fatalf("over max_unknown_lines, the client read %q", line)
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("a client over max_unknown_lines was not disconnected")
			}
			poll.Eventually(t, wait, func() bool {
				return len(entries(hook, "Connection closed")) == 1
			}, "the close logged")
			closed := entries(hook, "Connection closed")[0]
			if closed.Data[logging.FieldConnection] != bad.id || closed.Data["reason"] != "too many unknown lines" {
				t.Errorf("closed %v, want connection %d for too many unknown lines", closed.Data, bad.id)
			}
			why := entries(hook, "too many lines that are neither")
			if len(why) != 1 || why[0].Data["max_unknown_lines"] != 3 || why[0].Data["unknown_lines"] != uint64(4) {
				t.Errorf("disconnect logged as %v, want once with unknown_lines 4 and max_unknown_lines 3", why)
			}
			if st := s.Stats(); st.Protocol != 1 || st.UnknownLines != 4 || st.Connected != 1 {
				t.Errorf("protocol %d, unknown lines %d, connected %d; want 1, 4, 1", st.Protocol, st.UnknownLines, st.Connected)
			}

			// Lowered while the good client is connected, the limit closes
			// it at the next unknown line it sends, and never for acks.
			l := s.Limits()
			l.MaxUnknownLines = 1
			s.SetLimits(l)
			good.send(t, "first unknown")
			io.WriteString(good.tc, "second unknown\n")
			good.tc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if line, err := good.tc.r.ReadString('\n'); err == nil {
				t.Fatalf("after a lowered limit, the client read %q", line)
			}
			poll.Eventually(t, wait, func() bool { return s.Stats().Protocol == 2 }, "the second close counted")
		})
	}
}
