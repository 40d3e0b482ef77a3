// Package workqueue serves the text protocol's listener, and the
// sequenced listener's if AddSequenced is given one, as one work queue
// (broadcast.delivery: one): each feed line goes to one connected worker
// of either listener, is done when that worker acknowledges it, and goes
// back to the front of the queue, for another worker, when its worker
// disconnects, dies or does not acknowledge it within the ack timeout. A
// line handed out MaxDeliveries times without an ack is set aside as a
// dead letter, which Retry puts back.
//
// A worker of the text listener is sent each line as it is and
// acknowledges with ACK_RECEIVED <n>, matched in order against the lines
// it was sent, as the broadcaster matches them. A worker of the sequenced
// listener starts with START <stream> next, is sent "<seq> <line>", and
// acknowledges with ACK <seq>, which completes exactly that line: a worker
// holds lines that are not contiguous, so an ack is never cumulative here.
//
// Lines are handed out in feed order to the worker with the fewest
// unacknowledged lines (ties in turn), within a window of MaxInFlight
// lines per worker. While the queue holds QueueLines lines or QueueBytes
// bytes (waiting and in flight), Publish blocks: the feed is not read,
// and nothing is dropped.
//
// Delivery is at least once: a worker that handled a line but died
// before its ack arrived has that line handled again by another. A
// redelivered line may be handled after lines fed later.
//
// One mutex, Queue.mu, guards the queue's state: the waiting lines, every
// worker's lines in flight, the dead letters and the counters. No
// connection is read or written while it is held. Each worker has a
// reader goroutine and a writer goroutine, and a sequenced connection a
// goroutine that reads its START before it is a worker, all owned by Run,
// which waits for them.
package workqueue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/wire"
	"github.com/sirupsen/logrus"
)

// Options are the queue's settings. SetOptions replaces them while it runs.
type Options struct {
	// MaxInFlight is the most unacknowledged lines one worker holds.
	MaxInFlight int
	// AckTimeout is how long a worker may hold a line without
	// acknowledging it; then it is disconnected and loses its lines.
	AckTimeout time.Duration
	// MaxDeliveries is how many times a line is handed out without an
	// ack before it is set aside as a dead letter.
	MaxDeliveries int
	// MaxDeadLetters bounds the dead-letter list; the oldest goes when
	// a new one would exceed it.
	MaxDeadLetters int
	// QueueLines and QueueBytes bound the lines held, waiting and in
	// flight; Publish blocks beyond them.
	QueueLines int
	QueueBytes int
	// MaxClients is the most workers connected at once; 0 means no limit.
	MaxClients int
	// MaxClientLine is the longest line a worker may send.
	MaxClientLine int
	// TCPKeepAlive, if Idle is positive, is set on accepted connections.
	TCPKeepAlive net.KeepAliveConfig
}

// DefaultOptions are the settings of a queue configured with nothing.
func DefaultOptions() Options {
	return Options{
		MaxInFlight:    64,
		AckTimeout:     30 * time.Second,
		MaxDeliveries:  5,
		MaxDeadLetters: 1000,
		QueueLines:     1 << 18,
		QueueBytes:     16 << 20,
		MaxClientLine:  4096,
	}
}

// ErrFull is TryPublish's error when the queue has no room.
var ErrFull = errors.New("the work queue is full")

// ErrNoDeadLetter is Retry's error for a sequence number that is not in
// the dead-letter list.
var ErrNoDeadLetter = errors.New("no dead letter with that sequence number")

// item is one feed line in the queue.
type item struct {
	seq        uint64
	line       []byte
	deliveries int // times handed out
	// failures counts the deliveries that ended without an ack: its
	// worker lost (disconnected, dead, timed out) or a mismatched ack.
	failures int
	// suspect marks a line that has failed: it goes only to a worker
	// that holds nothing else, and that worker gets nothing more until it
	// is acknowledged, so that a line that kills its workers is the only
	// one they hold and is told apart from the lines that were merely
	// beside it.
	suspect bool
	fed     time.Time // when it entered the queue
	sent    time.Time // when last handed out
	noAck   bool      // reads like KEEP_ALIVE_ACK: the original worker never acknowledges it
	// done, for a line of PublishFrom, is told once whether the line was
	// acknowledged (true) or set aside as a dead letter (false).
	done func(acked bool)
}

// DeadLetter is a line set aside after MaxDeliveries deliveries without an
// ack.
type DeadLetter struct {
	Seq  uint64
	Line []byte
	// Deliveries counts the deliveries that ended without an ack while
	// the line was its worker's oldest unacknowledged one.
	Deliveries int
	At         time.Time // when it was set aside
}

// Queue is a work queue on the text listener and, with AddSequenced, the
// sequenced one. Build it with New, run it with Run.
type Queue struct {
	ln     net.Listener // the text listener
	seqLn  net.Listener // the sequenced listener; nil without one
	stream string       // the stream the sequenced listener names
	log    *logrus.Entry
	now    func() time.Time
	wg     sync.WaitGroup // connection goroutines
	nextID atomic.Uint64  // last worker id given, unless ids is set
	ids    IDSource       // numbers workers with the daemon's other clients; set before Run

	mu      sync.Mutex // guards everything below
	room    sync.Cond  // on mu: signalled when lines leave the queue or it closes
	opts    Options
	closed  bool // Run has ended or is ending: no worker is admitted
	release bool // Publish no longer waits for room (Release, or Run has ended)
	pending ring[*item]
	workers []*worker // connected, in the order they came
	// starting are the sequenced connections whose START is awaited.
	starting map[net.Conn]struct{}
	turn     int // where the next search for the least loaded worker starts
	dead     []DeadLetter
	seq      uint64 // last sequence number given
	held     int    // lines waiting or in flight
	heldB    int    // their bytes
	waitB    int    // the bytes of the lines in pending
	waiting  int    // Publish calls waiting for room
	counts   counters
	roomCh   chan struct{} // one token: Room may have grown
}

// counters are the queue's totals; guarded by Queue.mu.
type counters struct {
	published, acked, mismatched, redeliveries   uint64
	deadLettered, deadDropped, accepted, refused uint64
	keepAlives, unknown, ackTimeouts, badStarts  uint64
}

// IDSource hands out connection ids, such as the broadcast servers'
// shared numbering, so that a daemon's workers and clients never share
// an id.
type IDSource interface{ Next() uint64 }

// SetClientIDs makes the queue number its workers from ids, shared with
// the daemon's other listeners. It must be called before Run.
func (q *Queue) SetClientIDs(ids IDSource) { q.ids = ids }

func (q *Queue) newID() uint64 {
	if q.ids != nil {
		return q.ids.Next()
	}
	return q.nextID.Add(1)
}

// New returns a queue that will accept workers on ln. It starts nothing.
func New(ln net.Listener, opts Options, log *logrus.Entry) *Queue {
	q := &Queue{ln: ln, log: log, now: time.Now, opts: opts, roomCh: make(chan struct{}, 1), starting: make(map[net.Conn]struct{})}
	q.room.L = &q.mu
	return q
}

// Addr returns the text listener's address.
func (q *Queue) Addr() net.Addr { return q.ln.Addr() }

// SetOptions replaces the settings: a larger window or queue takes effect
// at once, a smaller one as lines are acknowledged.
func (q *Queue) SetOptions(opts Options) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.opts = opts
	if over := len(q.dead) - opts.MaxDeadLetters; over > 0 {
		q.dropDeadLocked(over)
	}
	q.room.Broadcast()
	q.roomChangedLocked()
	q.dispatchLocked()
}

// Run accepts workers until ctx is done, then closes the listener and
// every connection and waits for their goroutines. Lines still held stay
// counted (see Stats). It returns nil after ctx is done.
func (q *Queue) Run(ctx context.Context) error {
	lns := []net.Listener{q.ln}
	if q.seqLn != nil {
		lns = append(lns, q.seqLn)
	}
	accepted := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { accepted <- q.acceptLoop(ctx, ln, ln == q.seqLn) }()
	}
	running := len(lns)

	tick := time.NewTicker(q.checkEvery())
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-accepted:
			running--
			if err != nil {
				break loop
			}
			if running == 0 {
				accepted = nil // the workers connected are still served
			}
		case <-tick.C:
			q.expire()
			tick.Reset(q.checkEvery())
		}
	}
	for _, ln := range lns {
		ln.Close()
	}
	for ; running > 0; running-- {
		<-accepted
	}
	q.mu.Lock()
	q.closed, q.release = true, true
	ws := slices.Clone(q.workers)
	var starting []net.Conn
	for c := range q.starting {
		starting = append(starting, c)
	}
	q.room.Broadcast()
	q.mu.Unlock()
	for _, w := range ws {
		w.conn.Close()
	}
	for _, c := range starting {
		c.Close()
	}
	q.wg.Wait()
	return err
}

// checkEvery is how often Run looks for lines held past the ack timeout.
func (q *Queue) checkEvery() time.Duration {
	q.mu.Lock()
	d := q.opts.AckTimeout / 4
	q.mu.Unlock()
	return min(max(d, 5*time.Millisecond), time.Second)
}

// acceptLoop accepts workers on ln until it is closed, backing off on
// errors; a sequenced listener's connections are workers once they have
// started.
func (q *Queue) acceptLoop(ctx context.Context, ln net.Listener, sequenced bool) error {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			q.log.WithError(err).Warnf("Accept failed; trying again in %s", delay)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		id := q.newID()
		if sequenced {
			q.awaitStart(id, conn)
			continue
		}
		q.admit(id, conn, Text)
	}
}

// Publish queues lines (copied) and returns the sequence number of the
// last. While the queue is full it waits for room, so that the feed is not
// read; after Release, or once Run has ended, it queues without waiting.
func (q *Queue) Publish(lines [][]byte) uint64 {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range lines {
		for !q.release && !q.fitsLocked(len(l)) {
			q.dispatchLocked()
			q.waiting++
			q.room.Wait()
			q.waiting--
		}
		q.addLocked(l, now)
	}
	q.dispatchLocked()
	return q.seq
}

// WaitRoom waits until next fits in the queue, or Release, for a caller
// that publishes with PublishFit and must not wait while holding a lock
// of its own.
func (q *Queue) WaitRoom(next []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.release && !q.fitsLocked(len(next)) {
		q.waiting++
		q.room.Wait()
		q.waiting--
	}
}

// PublishFit queues the lines of the longest prefix of lines that fits
// (all of them after Release) without waiting, and returns how many and
// the sequence number of the last.
func (q *Queue) PublishFit(lines [][]byte) (n int, seq uint64) {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range lines {
		if !q.release && !q.fitsLocked(len(l)) {
			break
		}
		q.addLocked(l, now)
		n++
	}
	q.dispatchLocked()
	return n, q.seq
}

// Release makes Publish stop waiting for room, for a feed that stops: the
// lines it is publishing are queued over the limits, and counted as
// waiting.
func (q *Queue) Release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.release = true
	q.room.Broadcast()
}

// TryPublish queues one line if there is room, or returns ErrFull.
func (q *Queue) TryPublish(line []byte) (uint64, error) {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.fitsLocked(len(line)) {
		return 0, fmt.Errorf("%w (%d lines, %d bytes held); try again once workers have acknowledged lines", ErrFull, q.held, q.heldB)
	}
	q.addLocked(line, now)
	q.dispatchLocked()
	return q.seq, nil
}

// fitsLocked reports whether a line of n bytes fits in the queue. An
// empty queue takes any line.
func (q *Queue) fitsLocked(n int) bool {
	return q.held == 0 || (q.held < q.opts.QueueLines && q.heldB+n <= q.opts.QueueBytes)
}

func (q *Queue) addLocked(l []byte, now time.Time) {
	q.pending.pushBack(q.newItemLocked(l, now))
	q.waitB += len(l)
}

// newItemLocked numbers a new line and counts it as held.
func (q *Queue) newItemLocked(l []byte, now time.Time) *item {
	q.seq++
	q.held++
	q.heldB += len(l)
	q.counts.published++
	return &item{seq: q.seq, line: bytes.Clone(l), fed: now, noAck: string(l) == wire.KeepAliveAck}
}

// doneLocked takes an item out of the queue's count of lines held, and
// tells its origin whether it was acknowledged.
func (q *Queue) doneLocked(it *item, acked bool) {
	q.held--
	q.heldB -= len(it.line)
	q.room.Broadcast()
	q.roomChangedLocked()
	if it.done != nil {
		it.done(acked)
		it.done = nil
	}
}

// roomChangedLocked wakes a caller of RoomChanged.
func (q *Queue) roomChangedLocked() {
	select {
	case q.roomCh <- struct{}{}:
	default:
	}
}

// PublishFrom queues lines (copied) that come from another queue, such
// as a JetStream work-queue consumer, and must be confirmed there: done
// is called once for each line, with the queue's lock held (so it must
// not block nor call the queue), true when a worker acknowledged the
// line, false when it was set aside as a dead letter. failures counts the
// deliveries of the lines that ended without an ack before they came
// here; a line with failures is a suspect, and one with MaxDeliveries of
// them is set aside at once. PublishFrom never waits for room: its
// caller takes only what Room says.
func (q *Queue) PublishFrom(lines [][]byte, failures int, done func(acked bool)) {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range lines {
		it := q.newItemLocked(l, now)
		it.done, it.failures, it.suspect = done, failures, failures > 0
		if failures >= q.opts.MaxDeliveries {
			q.deadLetterLocked(it, now)
			continue
		}
		q.pending.pushBack(it)
		q.waitB += len(l)
	}
	q.dispatchLocked()
}

// Room returns how many more lines the connected workers have room for
// in their windows, beyond the lines waiting: what a caller of
// PublishFrom should take next. It is 0 with no worker connected.
func (q *Queue) Room() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, w := range q.workers {
		n += max(0, q.opts.MaxInFlight-w.inflight.len())
	}
	return max(0, n-q.pending.len())
}

// RoomChanged returns a channel that receives when Room may have grown:
// a line was acknowledged or set aside, a worker came or went.
func (q *Queue) RoomChanged() <-chan struct{} { return q.roomCh }

// dispatchLocked hands waiting lines out to workers with room in their
// window, each to the one with the fewest lines in flight, and wakes
// their writers.
func (q *Queue) dispatchLocked() {
	if q.pending.len() == 0 || len(q.workers) == 0 {
		return
	}
	now := q.now()
	var woken []*worker
	for q.pending.len() > 0 {
		w := q.pickLocked(q.pending.at(0).suspect)
		if w == nil {
			break
		}
		it := q.pending.popFront()
		q.waitB -= len(it.line)
		if it.deliveries > 0 {
			q.counts.redeliveries++
		}
		it.deliveries++
		it.sent = now
		w.inflight.pushBack(it)
		w.delivered++
		if !w.due {
			w.due = true
			woken = append(woken, w)
		}
	}
	for _, w := range woken {
		w.wakeWriter()
	}
}

// pickLocked returns the worker with the fewest lines in flight and room
// for one more, the first such from q.turn on, or nil. A suspect line
// goes only to a worker that holds nothing, and a worker that holds one
// gets nothing more.
func (q *Queue) pickLocked(suspect bool) *worker {
	n := len(q.workers)
	var best *worker
	bestAt := 0
	for i := range n {
		at := (q.turn + i) % n
		w := q.workers[at]
		held := w.inflight.len()
		if held >= q.opts.MaxInFlight || (held > 0 && (suspect || w.inflight.at(0).suspect)) {
			continue
		}
		if best == nil || w.inflight.len() < best.inflight.len() {
			best, bestAt = w, at
			if best.inflight.len() == 0 {
				break
			}
		}
	}
	if best != nil {
		q.turn = (bestAt + 1) % n
	}
	return best
}

// requeueLocked puts lines a worker lost back at the front of the queue,
// in order, but for those that failed MaxDeliveries times: dead letters.
func (q *Queue) requeueLocked(items []*item, now time.Time) {
	back := items[:0]
	for _, it := range items {
		if it.failures >= q.opts.MaxDeliveries {
			q.deadLetterLocked(it, now)
			continue
		}
		back = append(back, it)
	}
	q.pending.pushFront(back)
	for _, it := range back {
		q.waitB += len(it.line)
	}
}

// deadLetterLocked sets a line aside.
func (q *Queue) deadLetterLocked(it *item, now time.Time) {
	q.doneLocked(it, false)
	q.counts.deadLettered++
	if q.opts.MaxDeadLetters <= 0 {
		q.counts.deadDropped++
		q.log.WithFields(logrus.Fields{"seq": it.seq, "deliveries": it.failures}).
			Warnf("Poison line %d dropped after %d deliveries without an ack: the dead-letter list holds none", it.seq, it.failures)
		return
	}
	if len(q.dead) >= q.opts.MaxDeadLetters {
		q.dropDeadLocked(len(q.dead) - q.opts.MaxDeadLetters + 1)
	}
	q.dead = append(q.dead, DeadLetter{Seq: it.seq, Line: it.line, Deliveries: it.failures, At: now})
	q.log.WithFields(logrus.Fields{"seq": it.seq, "deliveries": it.failures}).
		Warnf("Poison line %d set aside after %d deliveries without an ack; chattyctl deadletters shows it, chattyctl retry %d puts it back", it.seq, it.failures, it.seq)
}

// dropDeadLocked drops the n oldest dead letters.
func (q *Queue) dropDeadLocked(n int) {
	for _, d := range q.dead[:n] {
		q.log.WithField("seq", d.Seq).Warnf("Dead letter %d dropped: the dead-letter list is full", d.Seq)
	}
	q.counts.deadDropped += uint64(n)
	q.dead = slices.Delete(q.dead, 0, n)
}

// LastSeq returns the sequence number of the last line queued.
func (q *Queue) LastSeq() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.seq
}

// DeadLetters returns the dead letters, oldest first.
func (q *Queue) DeadLetters() []DeadLetter {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.dead)
}

// Retry puts the dead letter seq back at the front of the queue with its
// deliveries counted from 0 again, to be handed to a worker that holds
// nothing else. It does not wait for room: the line
// was in the queue before.
func (q *Queue) Retry(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.IndexFunc(q.dead, func(d DeadLetter) bool { return d.Seq == seq })
	if i < 0 {
		return fmt.Errorf("%w: %d", ErrNoDeadLetter, seq)
	}
	d := q.dead[i]
	q.dead = slices.Delete(q.dead, i, i+1)
	// A suspect still: it goes to a worker that holds nothing else.
	it := &item{seq: d.Seq, line: d.Line, fed: q.now(), suspect: true, noAck: string(d.Line) == wire.KeepAliveAck}
	q.pending.pushFront([]*item{it})
	q.waitB += len(it.line)
	q.held++
	q.heldB += len(it.line)
	q.log.WithField("seq", seq).Infof("Dead letter %d queued again", seq)
	q.dispatchLocked()
	return nil
}

// expire disconnects every worker that has held a line longer than the
// ack timeout; its lines go to others.
func (q *Queue) expire() {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	limit := q.opts.AckTimeout
	for _, w := range slices.Clone(q.workers) {
		if w.inflight.len() == 0 {
			continue
		}
		if held := now.Sub(w.inflight.at(0).sent); held > limit {
			q.counts.ackTimeouts++
			q.dropLocked(w, "ack timeout", logrus.Fields{"ack_timeout": limit.String()})
		}
	}
}

// Drain waits until every line held has been acknowledged (or set aside),
// or ctx is done, and returns how many lines were still waiting and in
// flight.
func (q *Queue) Drain(ctx context.Context) (waiting, inFlight int) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		q.mu.Lock()
		waiting, inFlight = q.pending.len(), q.held-q.pending.len()
		q.mu.Unlock()
		if waiting+inFlight == 0 {
			return 0, 0
		}
		select {
		case <-ctx.Done():
			return waiting, inFlight
		case <-t.C:
		}
	}
}

// Stats are the queue's counters and state.
type Stats struct {
	Connected     int
	Waiting       int // lines waiting for a worker
	WaitingBytes  int
	InFlight      int           // lines handed out, not acknowledged
	OldestWaiting time.Duration // age of the line at the front of the queue
	// FeedHeld reports whether Publish is waiting for room: the feed is
	// not read.
	FeedHeld                                    bool
	Published, Acked, Mismatched, Redeliveries  uint64
	AckTimeouts                                 uint64
	DeadLetters                                 int // in the list now
	DeadLettered, DeadLettersDropped            uint64
	Accepted, Refused, KeepAlives, UnknownLines uint64
	// BadStarts counts the sequenced connections refused for their
	// START line.
	BadStarts uint64
}

// Stats returns the counters and state.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := Stats{
		Connected:          len(q.workers),
		Waiting:            q.pending.len(),
		InFlight:           q.held - q.pending.len(),
		FeedHeld:           q.waiting > 0,
		Published:          q.counts.published,
		Acked:              q.counts.acked,
		Mismatched:         q.counts.mismatched,
		Redeliveries:       q.counts.redeliveries,
		AckTimeouts:        q.counts.ackTimeouts,
		DeadLetters:        len(q.dead),
		DeadLettered:       q.counts.deadLettered,
		DeadLettersDropped: q.counts.deadDropped,
		Accepted:           q.counts.accepted,
		Refused:            q.counts.refused,
		KeepAlives:         q.counts.keepAlives,
		UnknownLines:       q.counts.unknown,
		BadStarts:          q.counts.badStarts,
	}
	st.WaitingBytes = q.waitB
	if q.pending.len() > 0 {
		st.OldestWaiting = q.now().Sub(q.pending.at(0).fed)
	}
	return st
}

// WorkerInfo describes one connected worker.
type WorkerInfo struct {
	ID uint64
	// Listener is the listener it connected to.
	Listener    Listener
	Remote      string
	ConnectedAt time.Time
	InFlight    int
	// Delivered counts the lines handed to it, Acked and Mismatched its
	// acks.
	Delivered, Acked, Mismatched uint64
	KeepAlives, UnknownLines     uint64
}

// Workers describes the connected workers, in the order they came.
func (q *Queue) Workers() []WorkerInfo {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]WorkerInfo, len(q.workers))
	for i, w := range q.workers {
		out[i] = WorkerInfo{
			ID: w.id, Listener: w.listener, Remote: w.remote, ConnectedAt: w.connected,
			InFlight: w.inflight.len(), Delivered: w.delivered, Acked: w.acked,
			Mismatched: w.mismatched, KeepAlives: w.keepAlives, UnknownLines: w.unknown,
		}
	}
	return out
}

// seqRanges writes sequence numbers compactly: "3-5,9".
func seqRanges(items []*item) string {
	var b strings.Builder
	for i := 0; i < len(items); {
		j := i
		for j+1 < len(items) && items[j+1].seq == items[j].seq+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(items[i].seq, 10))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.FormatUint(items[j].seq, 10))
		}
		i = j + 1
	}
	return b.String()
}

// connLog returns the logger of worker id's connection.
func (q *Queue) connLog(id uint64) *logrus.Entry {
	return q.log.WithField(logging.FieldConnection, id)
}
