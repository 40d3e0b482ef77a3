package pool

import (
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/sockowner"
)

// Replay: a slot carries on where its last worker stopped.
//
// With Options.Replay, a slot awaits its worker from the moment the
// worker starts until the broadcaster asks, through Claim, about a
// connection that this worker's process (or a process below it, as when
// a shell wraps the worker) holds the other end of. That connection is
// placed at the line after the last one the slot's previous worker
// acknowledged, and when it ends the slot remembers what it
// acknowledged. The worker is recognised by the kernel's account of who
// holds the peer socket (package sockowner), never by anything it sends,
// so an unchanged worker such as the original child is recognised too.
//
// A slot's next worker starts only once its previous connection has
// ended (or after connEndWait), so that it starts after what that
// connection really acknowledged.

// connEndWait bounds how long a slot whose worker has exited waits for
// the broadcaster to see the end of that worker's connection before
// starting the next one. The kernel closes a dead process's sockets at
// once, so this is reached only when the broadcaster is stuck.
const connEndWait = 2 * time.Second

// awaitWindow (a variable for tests) bounds how long a slot awaits its worker's connection:
// a worker that never connects to the broadcaster (a pool.command of
// another kind) would otherwise make every loopback connection look at
// its descriptors for as long as it lives.
var awaitWindow = 30 * time.Second

// Claim is what the pool says about a connection that is the awaited
// worker of a slot: where the broadcaster should start it and what to
// call back.
type Claim struct {
	// Slot is the slot whose worker holds the connection.
	Slot int
	// From is the sequence number of the first line to send: the one
	// after the last line the slot's previous worker acknowledged; 0 for
	// the slot's first worker, which starts live.
	From uint64
	// Started must be called once with the sequence number of the first
	// line really sent; one above From means lines From..first-1 were
	// no longer retained: a gap, logged and counted.
	Started func(first uint64)
	// Ended must be called once when the connection has ended, with the
	// last line acknowledged in order and the last line sent (each
	// first-1 when none).
	Ended func(acked, sent uint64)
}

// ReplayStats are a slot's, or the pool's, counters of replay.
type ReplayStats struct {
	// Identified counts connections recognised as a slot's worker.
	Identified uint64
	// Resumed counts workers that started after their predecessor's last
	// acknowledged line rather than live.
	Resumed uint64
	// Gaps counts workers that could not start there because retention
	// no longer held it; GapLines counts the lines they missed.
	Gaps, GapLines uint64
	// Duplicates counts lines sent to a worker that ended without
	// acknowledging them: they are sent again to its successor.
	Duplicates uint64
}

func (r *ReplayStats) add(o ReplayStats) {
	r.Identified += o.Identified
	r.Resumed += o.Resumed
	r.Gaps += o.Gaps
	r.GapLines += o.GapLines
	r.Duplicates += o.Duplicates
}

// replayState is one slot's replay bookkeeping, guarded by Pool.rep.mu.
type replayState struct {
	pid      int       // the running worker's pid; 0 when none runs
	awaiting bool      // pid's connection has not been identified yet
	claimed  bool      // a connection of pid's has been identified
	starting bool      // a worker is being forked: its pid is not known yet
	since    time.Time // when the slot began to await
	conn     *claimedConn
	// lastAcked is the last line the slot's workers acknowledged, known
	// once a worker's connection has ended after starting.
	lastAcked uint64
	known     bool
	stats     ReplayStats
}

// claimedConn is the connection of a slot's worker, once identified.
type claimedConn struct {
	from    uint64
	started bool          // Started has been called
	ended   chan struct{} // closed by Ended
}

// replay is the pool's side of replay: which slots await their worker.
type replay struct {
	awaitingN atomic.Int32 // slots awaiting; read without the lock
	warned    atomic.Bool  // an identification error has been logged

	// mu guards every slot's rep, waiting and totals. Pool.mu may be
	// held when taking it, never the other way round.
	mu     sync.Mutex
	totals ReplayStats
	// waiting lists the slots awaiting their worker.
	waiting []*slot
	// starting lists the slots whose worker is being forked; Claim
	// waits (on started) for their pids, for at most startWait, as a
	// worker may connect before its fork is reported.
	starting []*slot
	started  *sync.Cond // on mu; broadcast when a slot leaves starting
}

// startWait bounds how long Claim waits for the pid of a worker being
// forked: a fork is reported within microseconds, or a few milliseconds
// on a loaded machine.
var startWait = 100 * time.Millisecond

// beginStart makes s await a worker about to be forked, whose pid is not
// known yet: a connection that comes meanwhile waits for it (Claim).
func (p *Pool) beginStart(s *slot) {
	r := &p.rep
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started == nil {
		r.started = sync.NewCond(&r.mu)
	}
	if !s.rep.starting {
		s.rep.starting = true
		r.starting = append(r.starting, s)
		r.awaitingN.Add(1)
	}
}

// endStartLocked ends beginStart's wait: the worker was forked, or its
// start failed.
func (r *replay) endStartLocked(s *slot) {
	if !s.rep.starting {
		return
	}
	s.rep.starting = false
	if i := slices.Index(r.starting, s); i >= 0 {
		r.starting = slices.Delete(r.starting, i, i+1)
	}
	r.awaitingN.Add(-1)
	r.started.Broadcast()
}

// startFailed undoes beginStart for a worker that did not start.
func (p *Pool) startFailed(s *slot) {
	r := &p.rep
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endStartLocked(s)
}

// Awaiting reports whether some slot awaits its worker's connection. It
// costs one atomic load: the broadcaster asks it for every loopback
// connection, and calls Claim only when it is true.
func (p *Pool) Awaiting() bool { return p.rep.awaitingN.Load() > 0 }

// Claim tells whether conn is the connection of the worker some slot
// awaits, and if so returns where to place it; the slot no longer
// awaits. A connection that matches no slot (an ordinary client, or a
// worker's second connection) gets false, as does every connection when
// no slot awaits, at the cost of one atomic load.
//
// The broadcaster calls it as it accepts, so it must not wait for long:
// a connection whose peer is gone, or not on this host, is answered at
// once, and one that no awaited worker holds waits (for at most
// startWait) only for the forks that were under way when it came, as it
// may be one of theirs.
func (p *Pool) Claim(conn net.Conn) (Claim, bool) {
	if !p.Awaiting() {
		return Claim{}, false
	}
	ino, err := sockowner.PeerInode(conn)
	if err != nil {
		p.unidentified(err)
		return Claim{}, false
	}
	r := &p.rep
	candidates, forking := p.candidates()
	err = sockowner.ErrNoOwner
	var pid int
	if len(candidates) > 0 {
		pid, err = sockowner.Owner(ino, candidates)
	}
	if errors.Is(err, sockowner.ErrNoOwner) && len(forking) > 0 {
		pid, err = p.ownerForked(ino, forking)
	}
	if err != nil {
		p.unidentified(err)
		return Claim{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var s *slot
	for _, w := range r.waiting {
		if w.rep.pid == pid && w.rep.awaiting {
			s = w
			break
		}
	}
	if s == nil { // claimed meanwhile, or exited
		return Claim{}, false
	}
	r.unawaitLocked(s)
	s.rep.claimed = true
	c := &claimedConn{ended: make(chan struct{})}
	if s.rep.known {
		c.from = s.rep.lastAcked + 1
	}
	s.rep.conn = c
	r.countLocked(s, ReplayStats{Identified: 1})
	var startOnce, endOnce sync.Once
	return Claim{
		Slot:    s.num,
		From:    c.from,
		Started: func(first uint64) { startOnce.Do(func() { p.connStarted(s, c, first) }) },
		Ended:   func(acked, sent uint64) { endOnce.Do(func() { p.connEnded(s, c, acked, sent) }) },
	}, true
}

// candidates returns the pids of the workers awaited, and the slots
// whose worker is being forked. A slot that has awaited its worker for
// longer than awaitWindow no longer does.
func (p *Pool) candidates() (pids []int, forking []*slot) {
	r := &p.rep
	r.mu.Lock()
	var late []*slot
	for _, s := range r.waiting {
		if time.Since(s.rep.since) > awaitWindow {
			late = append(late, s)
			continue
		}
		pids = append(pids, s.rep.pid)
	}
	for _, s := range late {
		r.unawaitLocked(s)
	}
	forking = slices.Clone(r.starting)
	r.mu.Unlock()
	for _, s := range late {
		p.log.WithField(logging.FieldProcess, s.num).Warnf("The worker has not connected within %s of its start; its slot no longer awaits it, and a connection it makes later starts live", awaitWindow)
	}
	return pids, forking
}

// ownerForked waits, for at most startWait, for the workers of the
// slots forking to be forked, and returns the first of them that holds
// the socket with this inode. It looks at each worker as soon as its
// fork is reported, and gives up with ErrNoOwner once every one of them
// has been looked at (or failed to start): forks that begin meanwhile do
// not make it wait longer.
func (p *Pool) ownerForked(ino uint64, forking []*slot) (int, error) {
	r := &p.rep
	t := time.AfterFunc(startWait, func() {
		r.mu.Lock()
		r.started.Broadcast()
		r.mu.Unlock()
	})
	defer t.Stop()
	deadline := time.Now().Add(startWait)
	looked := make(map[*slot]int, len(forking)) // slot: the pid looked at
	r.mu.Lock()
	for {
		var fresh []int
		pending := false
		for _, s := range forking {
			switch {
			case s.rep.starting:
				pending = true
			case s.rep.awaiting && s.rep.pid != 0 && looked[s] != s.rep.pid:
				looked[s] = s.rep.pid
				fresh = append(fresh, s.rep.pid)
			}
		}
		if len(fresh) > 0 {
			r.mu.Unlock()
			pid, err := sockowner.Owner(ino, fresh)
			if !errors.Is(err, sockowner.ErrNoOwner) {
				return pid, err
			}
			r.mu.Lock()
			continue // look again: another fork may have been reported
		}
		if !pending || !time.Now().Before(deadline) {
			r.mu.Unlock()
			return 0, sockowner.ErrNoOwner
		}
		r.started.Wait()
	}
}

// unidentified notes why a connection was not found to be a worker's.
func (p *Pool) unidentified(err error) {
	switch {
	case errors.Is(err, sockowner.ErrNoOwner), errors.Is(err, sockowner.ErrNoSocket),
		errors.Is(err, sockowner.ErrNotLoopback), errors.Is(err, sockowner.ErrNotTCP):
		// Not a worker's, or gone already: an ordinary client.
	default:
		if p.rep.warned.CompareAndSwap(false, true) {
			p.log.WithError(err).Warn("Cannot tell whether a connection is a worker's; such connections are ordinary clients and their slots do not carry on (logged once)")
		}
	}
}

// connStarted records where c really started: a gap if after c.from.
func (p *Pool) connStarted(s *slot, c *claimedConn, first uint64) {
	r := &p.rep
	r.mu.Lock()
	c.started = true
	var d ReplayStats
	if c.from > 0 {
		d.Resumed = 1
		if first > c.from {
			d.Gaps, d.GapLines = 1, first-c.from
		}
	}
	r.countLocked(s, d)
	r.mu.Unlock()
	if d.Gaps > 0 {
		p.log.WithField(logging.FieldProcess, s.num).Warnf("Lines %d to %d were no longer retained; the slot's worker starts at line %d and never gets them (raise broadcast.retain to keep more)", c.from, first-1, first)
	}
}

// connEnded records what c's worker acknowledged, and makes the slot
// await its worker again if that worker still runs (it may reconnect).
func (p *Pool) connEnded(s *slot, c *claimedConn, acked, sent uint64) {
	r := &p.rep
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(c.ended)
	if sent > acked {
		r.countLocked(s, ReplayStats{Duplicates: sent - acked})
	}
	if s.rep.conn != c {
		return // the slot has moved on to another worker
	}
	s.rep.conn = nil
	if c.started && (!s.rep.known || acked > s.rep.lastAcked) {
		s.rep.lastAcked, s.rep.known = acked, true
	}
	if s.rep.pid != 0 {
		r.awaitLocked(s, s.rep.pid)
	}
}

// awaitWorker makes s await the connection of its new worker pid.
func (p *Pool) awaitWorker(s *slot, pid int) {
	r := &p.rep
	r.mu.Lock()
	r.awaitLocked(s, pid)
	r.endStartLocked(s)
	r.mu.Unlock()
}

func (r *replay) awaitLocked(s *slot, pid int) {
	if s.rep.pid != pid {
		s.rep.claimed = false
	}
	s.rep.pid = pid
	if !s.rep.awaiting {
		s.rep.awaiting, s.rep.since = true, time.Now()
		r.waiting = append(r.waiting, s)
		r.awaitingN.Add(1)
	}
}

func (r *replay) unawaitLocked(s *slot) {
	if !s.rep.awaiting {
		return
	}
	s.rep.awaiting = false
	for i, w := range r.waiting {
		if w == s {
			r.waiting = append(r.waiting[:i], r.waiting[i+1:]...)
			break
		}
	}
	r.awaitingN.Add(-1)
}

// workerGone ends s's wait for its worker pid, which has exited, and
// waits until the broadcaster has seen its connection end, for at most
// connEndWait or until stop is closed, so that the next worker starts
// after what this one really acknowledged.
func (p *Pool) workerGone(s *slot, stop <-chan struct{}) {
	r := &p.rep
	r.mu.Lock()
	// Awaiting again after its connection ended is not never seen: a
	// worker that closes its connection and then exits awaits meanwhile,
	// in case it connects again.
	neverSeen := s.rep.awaiting && s.rep.conn == nil && !s.rep.claimed
	r.unawaitLocked(s)
	s.rep.pid, s.rep.claimed = 0, false
	c, last := s.rep.conn, s.rep.lastAcked
	r.mu.Unlock()
	if neverSeen {
		p.log.WithField(logging.FieldProcess, s.num).Warnf("The exited worker's connection was never recognised as the slot's; its successor starts after line %d, the last one known acknowledged, and may be sent again lines it had", last)
	}
	if c == nil {
		return
	}
	t := time.NewTimer(connEndWait)
	defer t.Stop()
	select {
	case <-c.ended:
	case <-stop:
	case <-t.C:
		p.log.WithField(logging.FieldProcess, s.num).Warnf("The broadcaster has not seen the end of the exited worker's connection within %s; the next worker starts after line %d, the last one known acknowledged", connEndWait, last)
	}
}

// countLocked adds d to s's counters and the pool's totals.
func (r *replay) countLocked(s *slot, d ReplayStats) {
	s.rep.stats.add(d)
	r.totals.add(d)
}

// ReplayTotals returns the replay counters of every slot there ever was.
func (p *Pool) ReplayTotals() ReplayStats {
	p.rep.mu.Lock()
	defer p.rep.mu.Unlock()
	return p.rep.totals
}

// ReplayStatus is one slot's replay state at one moment.
type ReplayStatus struct {
	// Awaiting reports whether the slot's worker has started but its
	// connection has not been identified yet.
	Awaiting bool
	// LastAcked is the last line the slot's workers acknowledged; Known
	// reports whether it is known yet (a worker's connection has ended).
	LastAcked uint64
	Known     bool
	ReplayStats
}

// replayStatusLocked returns s's replay state; Pool.rep.mu must be held.
func (s *slot) replayStatusLocked() ReplayStatus {
	return ReplayStatus{Awaiting: s.rep.awaiting, LastAcked: s.rep.lastAcked, Known: s.rep.known, ReplayStats: s.rep.stats}
}
