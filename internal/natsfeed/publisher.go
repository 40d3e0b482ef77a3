package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/sirupsen/logrus"
)

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	// Subject is the subject the feed is published on.
	Subject string
	// Window is the most batches published and not yet acknowledged,
	// for an Unnumbered stream. A numbered stream takes one batch at a
	// time (see the package documentation: a batch's numbers are safe
	// only when the message it follows is known); lines that come
	// meanwhile wait, and go in the next batch together.
	Window int
	// BufferBytes bounds the lines taken and not yet acknowledged (each
	// counted with its "\n"); Publish blocks while they would exceed it.
	BufferBytes int
	// BatchLines and BatchBytes bound one message.
	BatchLines int
	BatchBytes int
	// Drain is how long Run goes on, once its context is done, to have
	// what it holds acknowledged.
	Drain time.Duration
	// Unnumbered publishes into a stream whose lines carry no global
	// numbers (the work-queue stream): no publish expects the stream's
	// last message, so that publishers do not contend, and up to Window
	// batches are in flight. Chatty-Seq is then this publisher's own
	// number of the batch's first line.
	Unnumbered bool
	// Elections, when not nil, are the stream's: reading the numbering
	// again after a failure is asked anew as soon as the stream has
	// elected a leader, not when the unanswered request times out.
	Elections *Elections
}

// PublisherStats are a Publisher's counters.
type PublisherStats struct {
	ID         string // this publisher's id, the prefix of its message ids
	Synced     bool   // its numbering is read from the stream
	LastSeq    uint64 // line sequence of the last line acknowledged; 0 if none
	StreamSeq  uint64 // stream sequence of the last batch acknowledged
	Lines      uint64 // lines acknowledged
	Batches    uint64 // batches acknowledged
	Duplicates uint64 // of those, acknowledged as duplicates (a retry of a stored batch)
	Pending    int    // batches published and not yet acknowledged
	Window     int
	Buffered   int64  // bytes taken and not yet acknowledged
	Retries    uint64 // batches published again after a failure
	Resyncs    uint64 // reads of the stream's numbering
	HeldBack   uint64 // Publish calls that waited for room
	Abandoned  uint64 // lines not acknowledged when Run ended (some may be stored)
}

// Publisher puts feed lines into the stream, numbered as the package
// documentation says. Publish queues lines; Run publishes them. A
// Publisher is safe for concurrent use.
type Publisher struct {
	js     jetstream.JetStream
	stream msgGetter
	info   func(ctx context.Context) (*jetstream.StreamInfo, error)
	opts   PublisherOptions
	log    *logrus.Entry
	id     string

	mu       sync.Mutex    // guards buf, bufBytes, room and stopped
	stopped  bool          // Run has ended: Publish takes nothing more
	buf      lineQueue     // lines taken, not yet in a batch
	bufBytes int           // bytes of buf, queue and inflight
	room     chan struct{} // closed when bufBytes shrinks, then replaced
	more     chan struct{} // one token: lines were added

	// Owned by Run.
	next     uint64   // line sequence of the next line; 0 before the numbering is read
	own      uint64   // this publisher's own number of its next line, for message ids
	lastSeq  uint64   // stream sequence the next publish must follow
	stored   uint64   // stream sequence of a batch stored before its retry, whose numbers sync reads; 0 if none
	queue    []*batch // batches to publish again, first in line order
	inflight []*batch // published, not yet acknowledged, in order

	stats struct {
		synced                     atomic.Bool
		lastSeq, streamSeq         atomic.Uint64
		lines, batches, duplicates atomic.Uint64
		pending                    atomic.Int64
		retries, resyncs, heldBack atomic.Uint64
		abandoned                  atomic.Uint64
	}
}

// batch is one message's lines.
type batch struct {
	lines [][]byte
	bytes int // with a "\n" each
	first uint64
	id    string
	fut   jetstream.PubAckFuture
	retry bool
}

// NewPublisher builds a publisher into stream through js, whose
// PublishAsync timeout and pending limit the caller has set (Connect
// does). It starts nothing; call Run.
func NewPublisher(js jetstream.JetStream, stream jetstream.Stream, opts PublisherOptions, log *logrus.Entry) *Publisher {
	return newPublisher(js, stream, func(ctx context.Context) (*jetstream.StreamInfo, error) { return stream.Info(ctx) }, opts, log)
}

func newPublisher(js jetstream.JetStream, g msgGetter, info func(context.Context) (*jetstream.StreamInfo, error), opts PublisherOptions, log *logrus.Entry) *Publisher {
	opts.Window = max(opts.Window, 1)
	if !opts.Unnumbered {
		opts.Window = 1
	}
	opts.BatchLines = max(opts.BatchLines, 1)
	opts.BatchBytes = max(opts.BatchBytes, 1)
	return &Publisher{
		js: js, stream: g, info: info, opts: opts, log: log,
		id:   nuid.Next(),
		own:  1,
		room: make(chan struct{}),
		more: make(chan struct{}, 1),
	}
}

// Options returns the options the publisher runs with.
func (p *Publisher) Options() PublisherOptions { return p.opts }

// ID returns the publisher's id, the prefix of its message ids.
func (p *Publisher) ID() string { return p.id }

// ErrStopped is Publish's error once Run has ended.
var ErrStopped = errors.New("the NATS publisher has stopped")

// Publish queues lines for the stream; it copies them. While the lines
// not yet acknowledged would exceed BufferBytes it waits (the feed is
// held back), until ctx is done or Run ends. A batch larger than
// BufferBytes is taken once nothing else is held.
func (p *Publisher) Publish(ctx context.Context, lines [][]byte) error {
	n := 0
	for _, l := range lines {
		n += len(l) + 1
	}
	// The copy is made before the lock, so that take is not kept
	// waiting behind a large call.
	arena := make([]byte, 0, n-len(lines))
	for _, l := range lines {
		arena = append(arena, l...)
	}
	p.mu.Lock()
	counted := false
	for !p.stopped && p.bufBytes > 0 && p.bufBytes+n > p.opts.BufferBytes {
		if !counted {
			p.stats.heldBack.Add(1)
			counted = true
		}
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
	}
	if p.stopped {
		p.mu.Unlock()
		return ErrStopped
	}
	p.buf.add(arena, lines)
	p.bufBytes += n
	p.mu.Unlock()
	select {
	case p.more <- struct{}{}:
	default:
	}
	return nil
}

// release returns n bytes of room, acknowledged or abandoned.
func (p *Publisher) release(n int) {
	p.mu.Lock()
	p.bufBytes -= n
	close(p.room)
	p.room = make(chan struct{})
	p.mu.Unlock()
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	p.mu.Lock()
	buffered := int64(p.bufBytes)
	p.mu.Unlock()
	s := &p.stats
	return PublisherStats{
		ID:         p.id,
		Synced:     s.synced.Load(),
		LastSeq:    s.lastSeq.Load(),
		StreamSeq:  s.streamSeq.Load(),
		Lines:      s.lines.Load(),
		Batches:    s.batches.Load(),
		Duplicates: s.duplicates.Load(),
		Pending:    int(s.pending.Load()),
		Window:     p.opts.Window,
		Buffered:   buffered,
		Retries:    s.retries.Load(),
		Resyncs:    s.resyncs.Load(),
		HeldBack:   s.heldBack.Load(),
		Abandoned:  s.abandoned.Load(),
	}
}

// Run publishes what Publish queues until ctx is done, then for up to
// Drain more to have what it holds acknowledged; lines still not
// acknowledged then are counted as abandoned. It returns nil.
func (p *Publisher) Run(ctx context.Context) error {
	p.loop(ctx, ctx.Done())
	if p.opts.Drain > 0 && p.holding() {
		dctx, cancel := context.WithTimeout(context.Background(), p.opts.Drain)
		p.loop(dctx, nil)
		cancel()
	}
	p.abandon()
	return nil
}

// holding reports whether lines wait for their acknowledgement.
func (p *Publisher) holding() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bufBytes > 0
}

// loop publishes until ctx is done, or, when stop is nil, until nothing
// is held.
func (p *Publisher) loop(ctx context.Context, stop <-chan struct{}) {
	wait := 50 * time.Millisecond
	lastLog := time.Time{}
	for ctx.Err() == nil {
		if stop == nil && !p.holding() {
			return
		}
		if p.next == 0 {
			elected := p.opts.Elections.Next() // before the request, so none is missed
			if err := p.sync(ctx, elected); err != nil {
				if ctx.Err() != nil {
					return
				}
				if time.Since(lastLog) > 10*time.Second {
					p.log.WithError(err).Warn("NATS: cannot read the stream's numbering; the feed is held back and retried")
					lastLog = time.Now()
				}
				select {
				case <-ctx.Done():
				case <-time.After(wait):
					wait = min(2*wait, time.Second)
				case <-elected:
					wait = 50 * time.Millisecond
					settle(ctx)
				}
				continue
			}
		}
		for len(p.inflight) < p.opts.Window && p.next != 0 {
			b := p.take()
			if b == nil {
				break
			}
			if err := p.send(b); err != nil {
				p.log.WithError(err).Debug("NATS: publish failed")
				p.failed(ctx, b, false)
			}
		}
		if p.next == 0 {
			continue
		}
		if len(p.inflight) == 0 {
			wait = 50 * time.Millisecond
			select {
			case <-ctx.Done():
			case <-p.more:
			case <-time.After(100 * time.Millisecond): // the drain's end
			}
			continue
		}
		oldest := p.inflight[0]
		select {
		case <-ctx.Done():
		case <-p.more:
		case ack := <-oldest.fut.Ok():
			p.inflight = p.inflight[1:]
			p.done(oldest, ack)
		case err := <-oldest.fut.Err():
			p.log.WithError(err).WithField("seq", oldest.first).Warn("NATS: publish not acknowledged; reading the stream and publishing again")
			p.inflight = p.inflight[1:]
			p.failed(ctx, oldest, true)
		}
	}
}

// take returns the next batch to publish, numbered: a batch to publish
// again, or new lines; nil when there is none.
func (p *Publisher) take() *batch {
	var b *batch
	if len(p.queue) > 0 {
		b, p.queue = p.queue[0], p.queue[1:]
	} else {
		p.mu.Lock()
		if lines, size := p.buf.take(p.opts.BatchLines, p.opts.BatchBytes); len(lines) > 0 {
			b = &batch{lines: lines, bytes: size}
		}
		p.mu.Unlock()
		if b == nil {
			return nil
		}
	}
	// A batch keeps its message id when it is published again, so that
	// the stream stores it once whatever its numbers are by then.
	if b.id == "" {
		b.id = p.id + "-" + strconv.FormatUint(p.own, 10)
		b.first = p.own
		p.own += uint64(len(b.lines))
	}
	if !p.opts.Unnumbered {
		b.first = p.next
		p.next += uint64(len(b.lines))
	}
	return b
}

// send publishes b after the message the stream has last, as Run knows it.
func (p *Publisher) send(b *batch) error {
	m := encode(p.opts.Subject, b.id, b.first, b.lines)
	var opts []jetstream.PublishOpt
	if !p.opts.Unnumbered {
		opts = append(opts, jetstream.WithExpectLastSequence(p.lastSeq))
	}
	fut, err := p.js.PublishMsgAsync(m, opts...)
	if err != nil {
		return err
	}
	if b.retry {
		p.stats.retries.Add(1)
	}
	b.fut = fut
	p.inflight = append(p.inflight, b)
	p.stats.pending.Store(int64(len(p.inflight)))
	p.lastSeq++
	return nil
}

// done records b's acknowledgement. A numbered batch acknowledged as a
// duplicate was stored by an earlier attempt, under the numbers it had
// then, and is not the stream's last message as this publisher knows it:
// the numbering is read again.
func (p *Publisher) done(b *batch, ack *jetstream.PubAck) {
	p.stats.pending.Store(int64(len(p.inflight)))
	p.stats.lines.Add(uint64(len(b.lines)))
	p.stats.batches.Add(1)
	p.stats.streamSeq.Store(ack.Sequence)
	p.release(b.bytes)
	switch {
	case ack.Duplicate:
		p.stats.duplicates.Add(1)
		if !p.opts.Unnumbered {
			p.stored = ack.Sequence
			p.resync()
		}
	case !p.opts.Unnumbered && ack.Sequence != p.lastSeq:
		// Cannot happen with the expected-last check; if it does, the
		// numbers this publisher goes on with are read, not assumed.
		p.log.WithFields(logrus.Fields{"stream_seq": ack.Sequence, "want": p.lastSeq}).Warn("NATS: a batch was stored at another sequence than expected; reading the stream's numbering again")
		p.stored = ack.Sequence
		p.resync()
	default:
		p.stats.lastSeq.Store(b.first + uint64(len(b.lines)) - 1)
	}
}

// resync has the numbering read from the stream before the next publish.
func (p *Publisher) resync() {
	p.next = 0
	p.stats.synced.Store(false)
}

// failed handles gone, a batch whose publish failed, older than every
// batch in flight or newer: it waits for each batch in flight to be
// acknowledged or fail (each within the ack timeout), keeps them all to
// publish again in order, and has the numbering read from the stream
// again, which finds those stored.
func (p *Publisher) failed(ctx context.Context, gone *batch, oldest bool) {
	var again []*batch
	if oldest {
		again = append(again, gone)
	}
	for _, b := range p.inflight {
		select {
		case <-b.fut.Ok():
			// Stored (an unnumbered batch: nothing else is in flight
			// beside a numbered one); published again, it is recognised
			// as the duplicate it is.
			again = append(again, b)
		case <-b.fut.Err():
			again = append(again, b)
		case <-ctx.Done():
			again = append(again, b)
		}
	}
	if !oldest {
		again = append(again, gone)
	}
	for _, b := range again {
		b.retry, b.fut = true, nil
	}
	p.inflight = nil
	p.stats.pending.Store(0)
	p.queue = append(again, p.queue...)
	p.resync()
}

// sync reads the stream's numbering: its last message, the line it ends
// with, and which batches to publish again are stored already.
func (p *Publisher) sync(ctx context.Context, elected <-chan struct{}) error {
	// Short attempts, retried: a request to a leader that just died
	// waits for its whole timeout, unless a new one is elected first.
	ctx, cancel := request(ctx, 2*time.Second, elected)
	defer cancel()
	err := p.read(ctx)
	return requestErr(ctx, err)
}

// read is sync's reading, with ctx bounding it.
func (p *Publisher) read(ctx context.Context) error {
	p.stats.resyncs.Add(1)
	if p.opts.Unnumbered {
		// Nothing to read but that the stream answers: the batches to
		// publish again keep their ids, which the stream recognises.
		if _, err := p.info(ctx); err != nil {
			return fmt.Errorf("stream info: %w", err)
		}
		p.next = 1
		p.stats.synced.Store(true)
		return nil
	}
	// Info may be stale while the stream elects a leader. That costs a
	// retry, never a number: a publish after a stale last sequence is
	// refused by the stream's expected-last checks, and read again.
	info, err := p.info(ctx)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	last := info.State.LastSeq
	if p.stored > 0 {
		// A batch of this publisher stored before it was published
		// again: its last line is this publisher's last acknowledged.
		end, err := lineEnd(ctx, p.stream, p.stored)
		if err != nil {
			return err
		}
		p.stats.lastSeq.Store(max(p.stats.lastSeq.Load(), end))
		p.stored = 0
	}
	var end uint64
	if last > 0 && info.State.Msgs > 0 {
		if end, err = lineEnd(ctx, p.stream, last); err != nil {
			return err
		}
	} else if last > 0 {
		// Every message is gone (max_age): the numbering goes on from
		// what this publisher knew, and cannot be read from the stream.
		end = p.stats.lastSeq.Load()
		for _, b := range p.queue {
			end = max(end, b.first+uint64(len(b.lines))-1)
		}
		p.log.WithField("stream_seq", last).Warn("NATS: the stream is empty; line numbers go on from this publisher's, and may repeat another's")
	}
	p.next, p.lastSeq = end+1, last
	p.stats.synced.Store(true)
	p.log.WithFields(logrus.Fields{"stream_seq": last, "next_line": p.next, "resend": len(p.queue)}).Debug("NATS: numbering read from the stream")
	return nil
}

// abandon counts what Run ends without having acknowledged.
func (p *Publisher) abandon() {
	n := 0
	for _, b := range p.inflight {
		n += len(b.lines)
	}
	for _, b := range p.queue {
		n += len(b.lines)
	}
	p.mu.Lock()
	n += p.buf.len()
	p.buf = lineQueue{}
	p.stopped = true
	close(p.room) // wakes Publish calls waiting for room
	p.room = make(chan struct{})
	p.mu.Unlock()
	p.inflight, p.queue = nil, nil
	if n > 0 {
		p.stats.abandoned.Add(uint64(n))
		p.log.Warnf("NATS: %d lines were not acknowledged by the stream when publishing stopped", n)
	}
}

// lineQueue is the lines Publish has taken, in chunks. Cutting a batch
// off the front leaves the chunks behind it where they are: one slice of
// every line queued would be copied whole each time appending outgrew
// it, over a million lines deep when the feed comes faster than the
// stream takes it. A call with many lines makes a chunk of its own;
// calls with few (a line a call, as chattyctl send makes) share chunks
// the queue makes with room for more.
type lineQueue struct {
	chunks [][][]byte // the first one from head on
	head   int
	lines  int
	shared bool // the last chunk takes more lines: it was made with room
}

// sharedChunk is the room of a chunk that calls of fewer lines than it
// share.
const sharedChunk = 256

// add queues lines, whose bytes are in arena one after another. Batches
// taken before are sliced with their capacity at their length, so
// appending to a chunk they were cut from leaves them as they are.
func (q *lineQueue) add(arena []byte, lines [][]byte) {
	if len(lines) == 0 {
		return
	}
	var c [][]byte
	last := len(q.chunks) - 1
	switch {
	case q.shared && cap(q.chunks[last])-len(q.chunks[last]) >= len(lines):
		c = q.chunks[last]
	case len(lines) < sharedChunk:
		c = make([][]byte, 0, sharedChunk)
		q.chunks = append(q.chunks, nil)
		q.shared, last = true, last+1
	default:
		c = make([][]byte, 0, len(lines))
		q.chunks = append(q.chunks, nil)
		q.shared, last = false, last+1
	}
	off := 0
	for _, l := range lines {
		c = append(c, arena[off:off+len(l):off+len(l)])
		off += len(l)
	}
	q.chunks[last] = c
	q.lines += len(lines)
}

func (q *lineQueue) len() int { return q.lines }

// take removes and returns up to maxLines lines from the front, and
// their bytes with a newline each: as many as fit in maxBytes, and at
// least one if any is queued.
func (q *lineQueue) take(maxLines, maxBytes int) (lines [][]byte, size int) {
	n := 0
	head := q.head
count:
	for _, c := range q.chunks {
		for _, l := range c[head:] {
			if n == maxLines || n > 0 && size+len(l)+1 > maxBytes {
				break count
			}
			size += len(l) + 1
			n++
		}
		head = 0
	}
	if n == 0 {
		return nil, 0
	}
	// A batch within one chunk is a slice of it; one across chunks is
	// gathered into a slice of its own.
	single := n <= len(q.chunks[0])-q.head
	if single {
		lines = q.chunks[0][q.head : q.head+n : q.head+n]
	} else {
		lines = make([][]byte, 0, n)
	}
	for left := n; left > 0; {
		c := q.chunks[0][q.head:]
		k := min(left, len(c))
		if !single {
			lines = append(lines, c[:k]...)
		}
		left -= k
		q.head += k
		if q.head == len(q.chunks[0]) {
			q.chunks[0] = nil
			q.chunks, q.head = q.chunks[1:], 0
		}
	}
	q.lines -= n
	if q.lines == 0 {
		q.chunks, q.shared = nil, false
	}
	return lines, size
}
