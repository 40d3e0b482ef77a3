package pool

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/procstat"
)

// claimed is one connection accepted by a test broadcaster, with what the
// pool said about it.
type claimed struct {
	conn  net.Conn
	claim Claim
	ok    bool
}

// acceptClaims accepts connections on ln and asks the pool about each,
// as the broadcaster does, until ln is closed.
func acceptClaims(t *testing.T, ln net.Listener, p *Pool) <-chan claimed {
	t.Helper()
	out := make(chan claimed, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cl, ok := p.Claim(c)
			out <- claimed{c, cl, ok}
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return out
}

func nextClaim(t *testing.T, ch <-chan claimed) claimed {
	t.Helper()
	select {
	case c := <-ch:
		t.Cleanup(func() { c.conn.Close() })
		return c
	case <-time.After(wait):
		t.Fatal("no connection came")
		return claimed{}
	}
}

// endOf waits until c's peer has closed it, as the broadcaster sees a
// dead worker's connection end.
func endOf(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the worker sent something")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the dead worker's connection did not end")
	}
}

func replayOptions(t *testing.T, size int, wrap bool) (Options, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions("dial", size)
	o.Addr = ln.Addr().String()
	o.Replay = true
	if wrap { // a shell that forks the worker rather than exec it
		o.Command = append([]string{"/bin/sh", "-c", `"$0" "$@"; exit $?`}, o.Command...)
	}
	return o, ln
}

func TestReplaySlotCarriesOn(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped=%v", wrap), func(t *testing.T) {
			o, ln := replayOptions(t, 2, wrap)
			tp := newPool(t, o)
			claims := acceptClaims(t, ln, tp.Pool)
			tp.run(t)

			// An ordinary client, connected while slots await: not claimed.
			bystander, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer bystander.Close()

			bySlot := map[int]claimed{}
			sawBystander := false
			for len(bySlot) < 2 || !sawBystander {
				c := nextClaim(t, claims)
				switch {
				case !c.ok && c.conn.RemoteAddr().String() == bystander.LocalAddr().String():
					sawBystander = true
				case !c.ok:
					t.Fatalf("a worker's connection from %s was not claimed", c.conn.RemoteAddr())
				case c.claim.From != 0:
					t.Fatalf("slot %d's first worker starts at %d, want live (0)", c.claim.Slot, c.claim.From)
				default:
					bySlot[c.claim.Slot] = c
				}
			}
			if tp.Awaiting() {
				t.Fatal("Awaiting after both workers were identified")
			}
			first := bySlot[1]
			first.claim.Started(100)
			first.claim.Started(1) // only the first call counts

			// The worker dies having acked to 150 of the 160 lines sent.
			before := tp.running()
			if err := unix.Kill(-before[1].PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			endOf(t, first.conn)
			first.claim.Ended(150, 160)

			next := nextClaim(t, claims)
			if !next.ok || next.claim.Slot != 1 {
				t.Fatalf("the new worker's connection: claimed %v, slot %d; want slot 1", next.ok, next.claim.Slot)
			}
			if next.claim.From != 151 {
				t.Fatalf("slot 1's next worker starts at %d, want 151 (after the last line acked)", next.claim.From)
			}
			next.claim.Started(151)
			st := slotStatus(t, tp.Pool, 1)
			if st.Replay.Duplicates != 10 || st.Replay.Resumed != 1 || st.Replay.Gaps != 0 || st.Replay.LastAcked != 150 || !st.Replay.Known {
				t.Fatalf("slot 1 replay %+v, want 10 duplicates, 1 resume, no gap, last acked 150", st.Replay)
			}

			// Retention no longer had 151: a gap of 49 lines, logged.
			before = tp.running()
			unix.Kill(-before[1].PID, syscall.SIGKILL)
			endOf(t, next.conn)
			next.claim.Ended(170, 170)
			third := nextClaim(t, claims)
			if !third.ok || third.claim.From != 171 {
				t.Fatalf("third worker: claimed %v from %d, want from 171", third.ok, third.claim.From)
			}
			third.claim.Started(220)
			tp.logs.waitFor(t, 1, `^Lines 171 to 219 were no longer retained`, 1)
			tot := tp.ReplayTotals()
			if tot.Gaps != 1 || tot.GapLines != 49 || tot.Duplicates != 10 || tot.Identified != 4 || tot.Resumed != 2 {
				t.Fatalf("totals %+v, want 1 gap of 49 lines, 10 duplicates, 4 identified, 2 resumed", tot)
			}
			if st := slotStatus(t, tp.Pool, 2); st.Replay.Identified != 1 || st.Replay.Resumed != 0 {
				t.Fatalf("slot 2 replay %+v, want only its first worker identified", st.Replay)
			}
		})
	}
}

// TestReplayReconnect: a worker whose connection ends while it lives is
// awaited again, and its next connection carries on.
func TestReplayReconnect(t *testing.T) {
	o, ln := replayOptions(t, 1, false)
	tp := newPool(t, o)
	claims := acceptClaims(t, ln, tp.Pool)
	tp.run(t)
	c := nextClaim(t, claims)
	if !c.ok {
		t.Fatal("not claimed")
	}
	c.claim.Started(5)
	c.claim.Ended(9, 9)
	if !tp.Awaiting() {
		t.Fatal("a live worker whose connection ended is not awaited again")
	}
	// The worker's process still holds its socket: a second look at
	// the same connection finds it.
	cl, ok := tp.Claim(c.conn)
	if !ok || cl.From != 10 {
		t.Fatalf("Claim again = %v from %d, want from 10", ok, cl.From)
	}
}

func TestReplayOff(t *testing.T) {
	o, ln := replayOptions(t, 2, false)
	o.Replay = false
	tp := newPool(t, o)
	claims := acceptClaims(t, ln, tp.Pool)
	tp.run(t)
	for range 2 {
		if c := nextClaim(t, claims); c.ok {
			t.Fatalf("with replay off slot %d claimed a connection", c.claim.Slot)
		}
	}
	if tp.Awaiting() {
		t.Fatal("a slot awaits with replay off")
	}
}

func slotStatus(t *testing.T, p *Pool, n int) SlotStatus {
	t.Helper()
	for _, s := range p.Slots() {
		if s.Slot == n {
			return s
		}
	}
	t.Fatalf("no slot %d", n)
	return SlotStatus{}
}

// TestReplayNextWaitsForTheEnd: a slot's next worker is started only once
// the broadcaster has reported its predecessor's connection ended, so
// that it starts after what that connection really acknowledged.
func TestReplayNextWaitsForTheEnd(t *testing.T) {
	o, ln := replayOptions(t, 1, false)
	tp := newPool(t, o)
	claims := acceptClaims(t, ln, tp.Pool)
	tp.run(t)
	c := nextClaim(t, claims)
	if !c.ok {
		t.Fatal("not claimed")
	}
	c.claim.Started(1)
	before := tp.running()
	if err := unix.Kill(before[1].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, wait, func() bool { return !procstat.Alive(before[1].PID) }, "the worker is dead")
	// The connection has not been reported ended: for a while, no new
	// worker may start (a bounded look, not a synchronisation).
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if st := slotStatus(t, tp.Pool, 1); st.PID != 0 && st.PID != before[1].PID {
			t.Fatalf("a new worker (pid %d) started before the last one's connection was reported ended", st.PID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(tp.logs.matching(`^Process terminated`, 1)); n != 0 {
		t.Fatalf("the exit was logged as restarted before the connection ended")
	}
	c.claim.Ended(300, 310)
	next := nextClaim(t, claims)
	if !next.ok || next.claim.From != 301 {
		t.Fatalf("next worker: claimed %v from %d, want from 301", next.ok, next.claim.From)
	}
}

// TestReplayAwaitEnds: a worker that never connects keeps its slot
// awaiting only for awaitWindow, so that it does not make every later
// connection look at its descriptors.
func TestReplayAwaitEnds(t *testing.T) {
	defer func(w time.Duration) { awaitWindow = w }(awaitWindow)
	awaitWindow = 100 * time.Millisecond
	o, ln := replayOptions(t, 1, false)
	o.Env[0] = helperEnv + "=sleep" // never connects
	tp := newPool(t, o)
	claims := acceptClaims(t, ln, tp.Pool)
	tp.run(t)
	tp.waitRunning(t, 1)
	if !tp.Awaiting() {
		t.Fatal("the slot does not await its new worker")
	}
	poll.Eventually(t, wait, func() bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if cl := nextClaim(t, claims); cl.ok {
			t.Fatal("an ordinary client was claimed")
		}
		return !tp.Awaiting()
	}, "the slot stops awaiting a worker that does not connect")
	tp.logs.waitFor(t, 1, `^The worker has not connected within 100ms of its start`, 1)
}

// TestClaimDoesNotWaitForOtherForks: an awaited worker's connection is
// claimed at once while another slot's worker is being forked, and a
// connection that no awaited worker holds waits only for the forks under
// way when it came. Claim runs in the broadcaster's accept loop: waiting
// on every fork there let a pool of short-lived workers fall behind its
// own connections for good.
func TestClaimDoesNotWaitForOtherForks(t *testing.T) {
	defer func(w time.Duration) { startWait = w }(startWait)
	startWait = time.Hour // so that a wait it should not make shows

	p := &Pool{log: logrus.NewEntry(logrus.New())}
	a, b, c := &slot{num: 1}, &slot{num: 2}, &slot{num: 3}
	p.beginStart(b) // forking, and stays so
	p.beginStart(a)
	p.awaitWorker(a, os.Getpid())

	got := make(chan claimed, 1)
	conn := selfConn(t)
	go func() { cl, ok := p.Claim(conn); got <- claimed{conn, cl, ok} }()
	select {
	case g := <-got:
		if !g.ok || g.claim.Slot != 1 {
			t.Fatalf("Claim = slot %d, %v; want slot 1", g.claim.Slot, g.ok)
		}
	case <-time.After(wait):
		t.Fatal("Claim of an awaited worker's connection waited for another slot's fork")
	}

	// No awaited worker holds this one; slot 3 is being forked when it
	// comes, and its worker turns out to be this process.
	p.beginStart(c)
	conn = selfConn(t)
	go func() { cl, ok := p.Claim(conn); got <- claimed{conn, cl, ok} }()
	select {
	case g := <-got:
		t.Fatalf("Claim = slot %d, %v before slot 3's fork was reported", g.claim.Slot, g.ok)
	case <-time.After(50 * time.Millisecond): // a bounded look, not a synchronisation
	}
	p.awaitWorker(c, os.Getpid())
	select {
	case g := <-got:
		if !g.ok || g.claim.Slot != 3 {
			t.Fatalf("Claim = slot %d, %v; want slot 3, whose fork was under way", g.claim.Slot, g.ok)
		}
	case <-time.After(wait):
		t.Fatal("Claim did not end when the fork it waited for was reported")
	}
}

// TestWorkerGoneWarnsOnlyWhenNeverSeen: a worker whose connection was
// recognised, ended, and then the worker exited is not reported as
// never recognised; one that never connected is.
func TestWorkerGoneWarnsOnlyWhenNeverSeen(t *testing.T) {
	conn := selfConn(t)

	log, hook := test.NewNullLogger()
	p := &Pool{log: logrus.NewEntry(log)}
	seen, never := &slot{num: 1}, &slot{num: 2}
	p.beginStart(seen)
	p.awaitWorker(seen, os.Getpid())
	cl, ok := p.Claim(conn)
	if !ok || cl.Slot != 1 {
		t.Fatalf("Claim = slot %d, %v; want slot 1", cl.Slot, ok)
	}
	cl.Started(1)
	cl.Ended(5, 5) // the worker closed its connection, then exits
	stop := make(chan struct{})
	p.workerGone(seen, stop)
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "never recognised") {
			t.Fatalf("a worker whose connection was recognised is reported: %s", e.Message)
		}
	}
	p.beginStart(never)
	p.awaitWorker(never, os.Getpid())
	p.workerGone(never, stop)
	var warned bool
	for _, e := range hook.AllEntries() {
		warned = warned || strings.Contains(e.Message, "never recognised")
	}
	if !warned {
		t.Fatal("a worker that never connected is not reported")
	}
}

// selfConn returns the accepted end of a loopback connection whose other
// end this process holds, so that sockowner finds this process as its
// owner.
func selfConn(t *testing.T) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
