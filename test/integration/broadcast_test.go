package integration

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

// Every connected client receives every fed line, in order, exactly once;
// a client receives only what was fed after it connected.
func TestEveryClientGetsEveryLineInOrder(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})

	early := numbered("early", 1, 100, 0)
	clients := make([]*harness.Client, 5)
	for i := range clients {
		clients[i] = harness.Dial(t, d.Addr())
		clients[i].KeepAlive(short) // admitted: it gets every line fed from now on
	}
	d.Feed(early...)
	for i, c := range clients {
		if diff := diffLines(c.ReadLines(len(early), short), early); diff != "" {
			t.Fatalf("client %d, lines fed before the late client connected: %s", i+1, diff)
		}
	}

	late := harness.Dial(t, d.Addr())
	late.KeepAlive(short)
	clients = append(clients, late)

	lines := numbered("line", 1, 10000, 0)
	d.Feed(lines...)
	for i, c := range clients {
		if diff := diffLines(c.ReadLines(len(lines), long), lines); diff != "" {
			t.Fatalf("client %d: %s", i+1, diff)
		}
		// Nothing was duplicated or left over: the next line is the
		// answer to a keep-alive.
		c.KeepAlive(short)
	}
}

// KEEP_ALIVE, ended by "\n" or "\r\n", is answered with exactly
// "KEEP_ALIVE_ACK\n", as a whole line between feed lines.
func TestKeepAliveAnsweredBetweenFeedLines(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)

	lines := numbered("feed", 1, 5000, 60)
	fed := make(chan error, 1)
	go func() {
		w := d.FeedWriter()
		for i := 0; i < len(lines); i += 50 {
			if _, err := w.Write(joinLines(lines[i:min(i+50, len(lines))])); err != nil {
				fed <- err
				return
			}
		}
		fed <- nil
	}()
	const keepAlives = 100
	for i := range keepAlives {
		if i%2 == 0 {
			c.SendRaw([]byte("KEEP_ALIVE\n"))
		} else {
			c.SendRaw([]byte("KEEP_ALIVE\r\n"))
		}
	}

	next, acks := 0, 0
	for next < len(lines) || acks < keepAlives {
		line := c.ReadLine(long)
		switch {
		case line == harness.KeepAliveAck:
			acks++
			if acks > keepAlives {
				t.Fatalf("more than %d answers to %d keep-alives", acks, keepAlives)
			}
		case next < len(lines) && line == lines[next]:
			next++
		default:
			t.Fatalf("after %d feed lines and %d answers: got %.100q, want %q or the feed line %q",
				next, acks, line, harness.KeepAliveAck, lines[min(next, len(lines)-1)])
		}
	}
	if err := <-fed; err != nil {
		t.Fatalf("feed: %v", err)
	}
	d.Feed("end")
	if line := c.ReadLine(short); line != "end" {
		t.Fatalf("after the feed and the answers: got %q, want %q", line, "end")
	}
}

// A client receives exactly the feed's bytes: no greeting, empty lines,
// tabs and bytes that are not UTF-8 unchanged, "\r\n" turned into "\n".
func TestClientSeesExactlyTheFeedBytes(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short) // the very first line is the answer: there is no greeting

	feed := "plain\n" +
		"\n" +
		"\ttabs\tin\tit\t\n" +
		"\xff\xfe\x80 not UTF-8 \xc3\x28\n" +
		"crlf ended\r\n" +
		"\r\n" +
		"inner\rcarriage return\n" +
		"  spaces around  \n" +
		"last\n"
	want := "plain\n" +
		"\n" +
		"\ttabs\tin\tit\t\n" +
		"\xff\xfe\x80 not UTF-8 \xc3\x28\n" +
		"crlf ended\n" +
		"\n" +
		"inner\rcarriage return\n" +
		"  spaces around  \n" +
		"last\n"
	d.FeedBytes([]byte(feed))
	if got := c.ReadFull(len(want), short); !bytes.Equal(got, []byte(want)) {
		t.Fatalf("client received\n%q\nwant\n%q", got, want)
	}
	d.Feed("after")
	if line := c.ReadLine(short); line != "after" {
		t.Fatalf("next line: got %q, want %q", line, "after")
	}
}

// A client that stops reading is disconnected once it lags beyond its
// queue, while a client that reads receives everything.
func TestSlowConsumerIsDisconnected(t *testing.T) {
	t.Parallel()
	// A client inside the retained lines is no slow consumer: with 1 MiB
	// retained, it is cut off once it lags beyond that and its queue.
	d := harness.StartDaemon(t, harness.Options{Config: config(`
broadcast:
  queue_bytes: 1048576
  queue_lines: 100000
  retain:
    bytes: 1048576
`)})
	slow := harness.Dial(t, d.Addr())
	slow.KeepAlive(short) // connection 1, then it never reads again
	good := harness.Dial(t, d.Addr())
	good.KeepAlive(short) // connection 2

	// 20 MB: far more than the slow client's kernel buffers and queue.
	lines := numbered("slow", 1, 200000, 100)
	feedPacedTo(t, d, good, lines)
	good.KeepAlive(short)

	d.WaitLog(t, "[connection: 1] Slow consumer: queue limit exceeded, disconnecting", short)
	d.WaitLogRE(t, regexp.MustCompile(`\[connection: 1\] Connection closed .*reason="slow consumer"`), short)
	if strings.Contains(d.Log(), "[connection: 2] Slow consumer") {
		t.Error("the good client was disconnected as a slow consumer too")
	}

	// What the slow client got before it was cut off is a gapless prefix.
	got := slow.ReadUntilClosed(long)
	if len(got) >= len(joinLines(lines)) {
		t.Fatalf("the slow client received all %d bytes", len(got))
	}
	t.Logf("slow client got %d bytes", len(got))
	gotLines := strings.Split(string(got), "\n")
	partial := gotLines[len(gotLines)-1]
	gotLines = gotLines[:len(gotLines)-1]
	if diff := diffLines(gotLines, lines[:len(gotLines)]); diff != "" {
		t.Fatalf("slow client: %s", diff)
	}
	if !strings.HasPrefix(lines[len(gotLines)], partial) {
		t.Fatalf("slow client: last partial line %q is not the start of %q", partial, lines[len(gotLines)])
	}
}

// With max_clients: 2 the third client gets one error line and is closed;
// the first two are served, and a freed place can be taken again.
func TestMaxClients(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  max_clients: 2\n")})
	c1 := harness.Dial(t, d.Addr())
	c1.KeepAlive(short)
	c2 := harness.Dial(t, d.Addr())
	c2.KeepAlive(short)

	c3 := harness.Dial(t, d.Addr())
	if line := c3.ReadLine(short); !strings.HasPrefix(line, "ERROR too many clients") {
		t.Fatalf("third client: got %q, want a line starting with %q", line, "ERROR too many clients")
	}
	c3.ExpectClosed(short)
	d.WaitLog(t, "Connection refused: too many clients", short)

	d.Feed("still served")
	for i, c := range []*harness.Client{c1, c2} {
		if line := c.ReadLine(short); line != "still served" {
			t.Fatalf("client %d: got %q, want %q", i+1, line, "still served")
		}
		c.KeepAlive(short)
	}

	c1.Close()
	d.WaitLog(t, "[connection: 1] Connection closed", short)
	c4 := harness.Dial(t, d.Addr())
	c4.KeepAlive(short)
}

// A feed line over feed.max_line_bytes is dropped with a warning and the
// feed goes on; lines of exactly the limit pass.
func TestOverLongFeedLineIsDropped(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("feed:\n  max_line_bytes: 100\n")})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)

	atLimit := strings.Repeat("b", 100)
	d.FeedBytes([]byte("before\n" +
		strings.Repeat("a", 101) + "\n" +
		atLimit + "\n" +
		atLimit + "\r\n" +
		strings.Repeat("c", 200000) + "\n" + // longer than the read buffer
		"after\n"))
	want := []string{"before", atLimit, atLimit, "after"}
	if diff := diffLines(c.ReadLines(len(want), short), want); diff != "" {
		t.Fatal(diff)
	}
	d.Feed("end")
	if line := c.ReadLine(short); line != "end" {
		t.Fatalf("after the dropped lines: got %.80q, want %q", line, "end")
	}
	// The log arrives through its own pipe, maybe after the lines.
	for _, size := range []string{"101", "200000"} {
		d.WaitLogRE(t, regexp.MustCompile(`Dropped an over-long line.* bytes=`+size+` `), short)
	}
	if n := strings.Count(d.Log(), "Dropped an over-long line"); n != 2 {
		t.Errorf("%d warnings about dropped lines, want 2", n)
	}
}

// A client that kept alive once and then sends nothing for idle_timeout
// is closed; one that sends KEEP_ALIVE regularly is not, even after a client that last spoke later
// than its first keep-alive has been closed for idleness.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	const idleTimeout = time.Second
	d := harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  idle_timeout: 1s\n")})
	idle := harness.Dial(t, d.Addr())
	idle.KeepAlive(short) // connection 1: its last word
	lastWord := time.Now()
	idleClosed := closedAt(idle)
	active := harness.Dial(t, d.Addr())
	active.KeepAlive(short) // connection 2

	// The ticker paces the active client's keep-alives; it waits for
	// nothing. After the first one, a witness (connection 3) speaks its
	// last word, more than a sweep for idle clients (idle_timeout/4)
	// after the active client's first: had the keep-alives not counted,
	// the active client would be closed before the witness.
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	var witness *harness.Client
	var witnessClosed <-chan time.Time // nil until the witness connects
	var idleAt, witnessAt time.Time
	for idleAt.IsZero() || witnessAt.IsZero() {
		select {
		case idleAt = <-idleClosed:
		case witnessAt = <-witnessClosed:
		case <-tick.C:
			active.KeepAlive(short)
			if witness == nil {
				witness = harness.Dial(t, d.Addr())
				witness.KeepAlive(short) // connection 3: its last word
				witnessClosed = closedAt(witness)
			}
		}
		if time.Since(lastWord) > long {
			t.Fatal("the idle clients were never closed")
		}
	}
	if after := idleAt.Sub(lastWord); after < idleTimeout-300*time.Millisecond || after > short {
		t.Errorf("the idle client was closed %s after its last line; want about %s", after, idleTimeout)
	}
	for _, conn := range []string{"1", "3"} {
		d.WaitLogRE(t, regexp.MustCompile(`\[connection: `+conn+`\] Connection closed .*reason="idle timeout"`), short)
	}
	if strings.Contains(d.Log(), "[connection: 2] Connection closed") {
		t.Fatal("the client sending KEEP_ALIVE every 300 ms was closed")
	}
	active.KeepAlive(short)
}

// closedAt reads c in the background, not through the harness (the
// goroutine must not fail the test), and sends the time chattyd closed
// the connection, or long passed.
func closedAt(c *harness.Client) <-chan time.Time {
	closed := make(chan time.Time, 1)
	go func() {
		var b [1]byte
		c.Conn().SetReadDeadline(time.Now().Add(long))
		c.Conn().Read(b[:])
		closed <- time.Now()
	}()
	return closed
}

// A client line longer than max_client_line closes that client only.
func TestClientLineTooLong(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  max_client_line: 64\n")})
	ok := harness.Dial(t, d.Addr())
	ok.KeepAlive(short)
	ok.Send(strings.Repeat("k", 64)) // at the limit: allowed
	ok.SendRaw([]byte(strings.Repeat("r", 64) + "\r\n"))
	ok.KeepAlive(short)

	for _, tc := range []struct {
		name string
		send string
	}{
		{"unterminated", strings.Repeat("u", 1000)},
		{"whole line", strings.Repeat("w", 200) + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := harness.Dial(t, d.Addr())
			c.KeepAlive(short)
			mark := d.LogLen()
			c.SendRaw([]byte(tc.send))
			c.ReadUntilClosed(short)
			d.WaitLogSince(t, mark, "Client line too long, disconnecting", short)
		})
	}
	d.Feed("ok is still served")
	if line := ok.ReadLine(short); line != "ok is still served" {
		t.Fatalf("the other client: got %q", line)
	}
	if strings.Contains(d.Log(), "[connection: 1] Connection closed") {
		t.Fatal("the client that kept within max_client_line was closed")
	}
}

// With max_unknown_lines, a client that sends one line more that is
// neither an ack nor a keep-alive is disconnected, and says why in the
// log; the first such line of a connection is logged; acks and
// keep-alives never count. A reload applies a new limit to the clients
// connected.
func TestMaxUnknownLines(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  max_unknown_lines: 2\n")})
	sock := d.ControlSocket()
	ok := harness.Dial(t, d.Addr())
	ok.KeepAlive(short)
	d.Feed("abc")
	if line := ok.ReadLine(short); line != "abc" {
		t.Fatalf("got %q", line)
	}
	ok.Send("ACK_RECEIVED 3")
	ok.KeepAlive(short)
	ok.KeepAlive(short)

	bad := harness.Dial(t, d.Addr())
	bad.KeepAlive(short)
	bad.Send("GET / HTTP/1.0")
	bad.Send("")
	bad.KeepAlive(short) // two: at the limit, still served
	d.WaitLogRE(t, regexp.MustCompile(`\[connection: 2\] Client line is neither an ack nor a keep-alive.*line="GET / HTTP/1.0"`), short)
	bad.Send("one too many")
	bad.ReadUntilClosed(short)
	d.WaitLogRE(t, regexp.MustCompile(`\[connection: 2\] Client sent too many lines that are neither acks nor keep-alives, disconnecting`), short)
	d.WaitLogRE(t, regexp.MustCompile(`\[connection: 2\] Connection closed .*reason="too many unknown lines"`), short)
	if n := strings.Count(d.Log(), "Client line is neither an ack nor a keep-alive"); n != 1 {
		t.Errorf("%d log lines for connection 2's unknown lines, want 1", n)
	}
	st := waitStatus(t, sock, "the bad client gone", func(st wireStatus) bool { return st.Clients.Connected == 1 })
	if st.Clients.UnknownLines != 3 || st.Clients.AcksGood != 1 {
		t.Errorf("status: %d unknown lines, %d good acks; want 3 and 1", st.Clients.UnknownLines, st.Clients.AcksGood)
	}

	// No limit after a reload: unknown lines are counted, and no one is
	// closed.
	mark := d.LogLen()
	d.WriteConfig(config("broadcast:\n  max_unknown_lines: 0\n"))
	d.Signal(syscall.SIGHUP)
	d.WaitLogSince(t, mark, "Configuration reloaded", short)
	for range 5 {
		ok.Send("noise")
	}
	ok.KeepAlive(short)
	var clients []wireClient
	ctlJSON(t, sock, &clients, "clients")
	if len(clients) != 1 || clients[0].UnknownLines != 5 {
		t.Errorf("clients %+v; want one with 5 unknown lines", clients)
	}
}

// Acks are counted per client and in total: a wrong length and an ack for
// a line never sent are mismatched. chattyctl shows the counts.
func TestAcksAreCounted(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	sock := d.ControlSocket()
	cs := admitted(t, d, 2)
	lines := variedLines("acked", 4)
	d.Feed(lines...)
	for i, c := range cs {
		for _, l := range c.ReadLines(len(lines), short) {
			c.Send(fmt.Sprintf("ACK_RECEIVED %d", len(l)))
		}
		if i == 1 {
			c.Send("ACK_RECEIVED 1") // for a line never sent
		}
	}
	// The first client gets one length wrong.
	d.Feed("one more")
	cs[0].ReadLine(short)
	cs[0].Send("ACK_RECEIVED 3")

	st := waitStatus(t, sock, "every ack", func(st wireStatus) bool {
		return st.Clients.AcksGood+st.Clients.AcksMismatched == 10
	})
	if st.Clients.AcksGood != 8 || st.Clients.AcksMismatched != 2 {
		t.Errorf("acks: %d good, %d mismatched; want 8 and 2", st.Clients.AcksGood, st.Clients.AcksMismatched)
	}
	var clients []wireClient
	ctlJSON(t, sock, &clients, "clients")
	for _, c := range clients {
		if c.AcksGood != 4 || c.AcksMismatched != 1 {
			t.Errorf("client %d: %d good acks, %d mismatched; want 4 and 1", c.ID, c.AcksGood, c.AcksMismatched)
		}
	}
	if out := ctlOK(t, sock, "status"); !strings.Contains(out, "acks 8 good, 2 mismatched") {
		t.Errorf("status does not show the acks:\n%s", out)
	}
}
