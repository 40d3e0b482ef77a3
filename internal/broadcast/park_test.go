package broadcast

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
)

// parked reports whether both halves of client id are parked.
func parked(s *Server, id uint64) bool {
	s.mu.Lock()
	c := s.clients[id]
	s.mu.Unlock()
	if c == nil {
		return false
	}
	s.parked.mu.Lock()
	defer s.parked.mu.Unlock()
	return c.w.parkIdx > 0 && c.r.parked.Load()
}

// waitParked waits until every connected client has both halves parked.
func waitParked(t *testing.T, s *Server) {
	t.Helper()
	poll.Eventually(t, wait, func() bool {
		for _, ci := range s.Clients() {
			if !parked(s, ci.ID) {
				return false
			}
		}
		return true
	}, "clients parked")
}

// Idle clients hold no goroutine: their reader waits in the poller and
// their writer in the parked list.
func TestIdleClientsHoldNoGoroutine(t *testing.T) {
	s := startServer(t, testLimits())
	base := runtime.NumGoroutine()
	const n = 200
	cs := make([]*testClient, n)
	for i := range cs {
		cs[i] = dial(t, s)
	}
	waitParked(t, s)
	// Polled, as the dialing goroutines and the runtime may take a moment
	// to settle too.
	poll.Eventually(t, wait, func() bool {
		return runtime.NumGoroutine()-base < 20
	}, "fewer than 20 goroutines for 200 idle clients")
	// They still get lines and answers.
	publish(s, "to everybody")
	for _, c := range cs {
		if got := c.readLine(t); got != "to everybody" {
			t.Fatalf("got %q", got)
		}
	}
	waitParked(t, s)
	poll.Eventually(t, wait, func() bool { return runtime.NumGoroutine()-base < 20 }, "goroutines gone again")
}

// Writers that park and wake at every line, while their readers park and
// wake for keep-alives, lose no line and answer every keep-alive.
// Few clients are woken on the publisher's goroutine, more on goroutines
// of their own (wakeAll): both ways must lose nothing.
func TestParkingUnderConcurrentPublishes(t *testing.T) {
	for _, clients := range []int{inlineClients / 2, 3 * inlineClients} {
		t.Run(fmt.Sprintf("%d clients", clients), func(t *testing.T) { testParkingUnderConcurrentPublishes(t, clients) })
	}
}

func testParkingUnderConcurrentPublishes(t *testing.T, clients int) {
	s := startServer(t, testLimits())
	const lines, keepAlives = 3000, 200
	cs := make([]*testClient, clients)
	for i := range cs {
		cs[i] = dial(t, s)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range lines {
			publish(s, fmt.Sprintf("line %d", i))
			if i%100 == 0 {
				runtime.Gosched() // let writers catch up and park
			}
		}
	})
	for _, c := range cs {
		wg.Go(func() {
			for range keepAlives {
				if _, err := io.WriteString(c, "KEEP_ALIVE\n"); err != nil {
					t.Errorf("send keep-alive: %v", err)
					return
				}
			}
		})
	}
	errs := make(chan error, clients)
	for _, c := range cs {
		go func() {
			next, acks := 0, 0
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			for next < lines || acks < keepAlives {
				got, err := c.r.ReadString('\n')
				if err != nil {
					errs <- fmt.Errorf("after %d lines and %d answers: %v", next, acks, err)
					return
				}
				if got == "KEEP_ALIVE_ACK\n" {
					acks++
					continue
				}
				if want := fmt.Sprintf("line %d\n", next); got != want {
					errs <- fmt.Errorf("got %q, want %q", got, want)
					return
				}
				next++
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	poll.Eventually(t, wait, func() bool { return s.Stats().KeepAlives == uint64(clients*keepAlives) }, "keep-alives counted")
	if st := s.Stats(); st.Connected != clients {
		t.Errorf("%d clients connected, want %d", st.Connected, clients)
	}
}

// A parked client is woken by what it sends: a keep-alive, even one that
// arrives in pieces across parks, is answered.
func TestParkedClientWokenByKeepAlive(t *testing.T) {
	s := startServer(t, testLimits())
	c := dial(t, s)
	waitParked(t, s)
	io.WriteString(c, "KEEP_ALIVE\n")
	if got := c.readLine(t); got != "KEEP_ALIVE_ACK" {
		t.Fatalf("got %q", got)
	}
	waitParked(t, s)
	io.WriteString(c, "KEEP_AL")
	waitParked(t, s) // the reader parks with half a line
	io.WriteString(c, "IVE\r\n")
	if got := c.readLine(t); got != "KEEP_ALIVE_ACK" {
		t.Fatalf("got %q", got)
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().KeepAlives == 2 }, "keep-alives counted")
}

// A parked client that sends nothing is closed at the idle timeout; one
// that keeps alive is not, though it connected before the other's last
// word.
func TestParkedClientIdleTimeout(t *testing.T) {
	lim := testLimits()
	lim.IdleTimeout = 500 * time.Millisecond
	s := startServer(t, lim)
	idle := dial(t, s)
	active := dial(t, s)
	waitParked(t, s)
	idleGone := make(chan error, 1)
	go func() {
		idle.SetReadDeadline(time.Now().Add(20 * lim.IdleTimeout))
		var err error
		for err == nil { // its keep-alive's answer, then the close
			_, err = idle.r.ReadString('\n')
		}
		idleGone <- err
	}()
	keepAlive := func() {
		t.Helper()
		io.WriteString(active, "KEEP_ALIVE\n")
		if got := active.readLine(t); got != "KEEP_ALIVE_ACK" {
			t.Fatalf("active client got %q", got)
		}
	}
	// The active client keeps alive ten times per timeout until the idle
	// one is closed; the ticker paces it and waits for nothing. The idle
	// client sends a keep-alive and half a line (parked with it, then
	// silent) at the fourth tick, more than a sweep (IdleTimeout/4) after
	// the active client connected: had its keep-alives not counted, the
	// active client would be closed first.
	pace := time.NewTicker(lim.IdleTimeout / 10)
	defer pace.Stop()
	var idleErr error
	for tick, waiting := 1, true; waiting; tick++ {
		select {
		case idleErr = <-idleGone:
			waiting = false
		case <-pace.C:
			if tick == 4 {
				io.WriteString(idle, "KEEP_ALIVE\nKEEP_")
			}
			keepAlive()
		}
	}
	if errors.Is(idleErr, os.ErrDeadlineExceeded) {
		t.Fatal("the idle client stayed open")
	}
	keepAlive() // and still served once the idle client is gone
	poll.Eventually(t, wait, func() bool { st := s.Stats(); return st.IdleClosed == 1 && st.Connected == 1 },
		"idle close counted and only the active client connected")
}

// At shutdown, parked clients are woken, receive what was published and
// the end of the stream, and Run returns with no goroutine left (checked
// by runServer).
func TestShutdownWithParkedClients(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, testLimits(), logging.Discard())
	stop := runServer(t, s)
	const n = 50
	cs := make([]*testClient, n)
	for i := range cs {
		cs[i] = dial(t, s)
	}
	waitParked(t, s)
	publish(s, "last line")
	stop()
	for i, c := range cs {
		if got := c.readLine(t); got != "last line" {
			t.Fatalf("client %d got %q", i, got)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if rest, err := c.r.ReadString('\n'); err == nil {
			t.Fatalf("client %d: no end of stream after the last line, got %q", i, rest)
		}
	}
}

// A partial line kept by a parked reader counts against the line limit
// in force when the rest arrives.
func TestParkedPartialLineOverNewLimit(t *testing.T) {
	s := startServer(t, testLimits())
	c := dial(t, s)
	io.WriteString(c, strings.Repeat("p", 200))
	waitParked(t, s)
	lim := s.Limits()
	lim.MaxClientLine = 64
	s.SetLimits(lim)
	io.WriteString(c, "p\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("connection stayed open")
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Protocol == 1 }, "protocol close counted")
}

// The server, its poller and its idle sweep stop cleanly even when no
// client ever connected.
func TestRunWithoutClients(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := runServer(t, New(ln, testLimits(), logging.Discard()))
	stop()
}

// A line published just as writers park, right after they wrote the
// previous one, is not left behind: each line is published only once
// every client has read the one before, many times over.
func TestParkRacesWithPublish(t *testing.T) {
	s := startServer(t, testLimits())
	const clients, rounds = 4, 2000
	cs := make([]*testClient, clients)
	for i := range cs {
		cs[i] = dial(t, s)
	}
	for i := range rounds {
		want := fmt.Sprintf("round %d", i)
		publish(s, want)
		for _, c := range cs {
			if got := c.readLine(t); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	}
}

// A woken writer that finds the client's socket full hands the rest to a
// goroutine that waits: once the client reads again it gets every line, in
// order, and the answer to a keep-alive sent meanwhile.
func TestWriterHandsOffWhenTheSocketIsFull(t *testing.T) {
	s := startServer(t, testLimits())
	c := dial(t, s)
	waitParked(t, s)
	line := strings.Repeat("f", 994)
	const lines, batch = 32000, 100 // 32 MB, more than loopback socket buffers hold
	for i := 0; i < lines; i += batch {
		b := make([]string, batch)
		for j := range b {
			b[j] = fmt.Sprintf("%05d %s", i+j, line)
		}
		publish(s, b...)
	}
	io.WriteString(c, "KEEP_ALIVE\n")
	acks := 0
	for i := 0; i < lines; {
		got := c.readLine(t)
		if got == "KEEP_ALIVE_ACK" {
			acks++
			continue
		}
		if want := fmt.Sprintf("%05d %s", i, line); got != want {
			t.Fatalf("line %d: got %.10q…", i, got)
		}
		i++
	}
	if acks == 0 {
		if got := c.readLine(t); got != "KEEP_ALIVE_ACK" {
			t.Fatalf("got %q, want the keep-alive's answer", got)
		}
	}
}

// Many parked clients reaching the idle timeout together are all closed,
// counted once each, and end (runServer checks that no goroutine is left).
func TestManyParkedClientsTimeOutTogether(t *testing.T) {
	lim := testLimits()
	lim.IdleTimeout = 300 * time.Millisecond
	s := startServer(t, lim)
	const n = 100
	cs := make([]*testClient, n)
	for i := range cs {
		cs[i] = dial(t, s)
		io.WriteString(cs[i], "KEEP_ALIVE\n") // subject to the idle timeout from now on
	}
	for i, c := range cs {
		if got := c.readLine(t); got != "KEEP_ALIVE_ACK" {
			t.Fatalf("client %d got %q, want the keep-alive's answer", i, got)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.r.ReadString('\n'); err == nil {
			t.Fatalf("client %d got a line", i)
		} else if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			t.Fatalf("client %d was never closed", i)
		}
	}
	poll.Eventually(t, wait, func() bool { return s.Stats().Connected == 0 }, "all closed")
	if st := s.Stats(); st.IdleClosed != n {
		t.Errorf("%d idle closes counted, want %d", st.IdleClosed, n)
	}
}
