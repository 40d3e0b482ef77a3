package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/sirupsen/logrus"
)

// Sink takes the lines of one stream message, the first with global
// sequence number first. The lines are valid only during the call. An
// error ends the Consumer's Run.
type Sink func(first uint64, lines [][]byte) error

// ConsumerOptions configure a Consumer.
type ConsumerOptions struct {
	// Stream is the stream's name.
	Stream string
	// Heartbeat is the consumer's idle heartbeat; two missed recreate it.
	Heartbeat time.Duration
	// StartFirst starts at the stream's first message; else StartSeq,
	// when not 0, is the stream sequence to start at; else the edge
	// starts with what is published from now on.
	StartFirst bool
	StartSeq   uint64
	// NextLine, when not 0, is the line sequence the sink expects next
	// (the broadcaster's next sequence number), so that lines the stream
	// no longer holds are reported as a gap.
	NextLine uint64
	// Elections, when not nil, are the stream's: a consumer is made
	// again as soon as the stream has elected a leader, not when the
	// unanswered request times out.
	Elections *Elections
}

// ConsumerStats are a Consumer's counters.
type ConsumerStats struct {
	StreamSeq uint64 // stream sequence of the last message handed on
	LastSeq   uint64 // line sequence of the last line handed on
	Messages  uint64 // messages handed on
	Lines     uint64 // lines handed on
	Gaps      uint64 // times lines were missing before a message
	GapLines  uint64 // lines missing in all
	Invalid   uint64 // messages that did not decode (skipped)
	Overlaps  uint64 // lines skipped as numbered before the last one handed on
	Restarts  uint64 // consumers created again after an error
}

// Consumer reads the stream in order, through an ephemeral consumer it
// makes again after every fault (missed heartbeats, a lost delivery, a
// consumer gone), and hands every message's lines to a Sink, with their
// global sequence numbers. It detects gaps (the stream no longer holds
// lines the edge needs) and counts and logs them.
type Consumer struct {
	js     jetstream.JetStream
	opts   ConsumerOptions
	sink   Sink
	log    *logrus.Entry
	stream msgGetter // for the numbering of a message without Chatty-Seq; set by consume

	deleting sync.WaitGroup // consumers being deleted; Run waits for them

	// Owned by Run.
	want          uint64    // line sequence of the next line; 0 when unknown
	overlapLogged time.Time // when skipped lines were last logged

	stats struct {
		streamSeq, lastSeq, messages, lines atomic.Uint64
		gaps, gapLines, invalid, overlaps   atomic.Uint64
		restarts                            atomic.Uint64
	}
}

// NewConsumer builds a consumer; it starts nothing: call Run.
func NewConsumer(js jetstream.JetStream, opts ConsumerOptions, sink Sink, log *logrus.Entry) *Consumer {
	return &Consumer{js: js, opts: opts, sink: sink, log: log, want: opts.NextLine}
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() ConsumerStats {
	s := &c.stats
	return ConsumerStats{
		StreamSeq: s.streamSeq.Load(), LastSeq: s.lastSeq.Load(),
		Messages: s.messages.Load(), Lines: s.lines.Load(),
		Gaps: s.gaps.Load(), GapLines: s.gapLines.Load(),
		Invalid: s.invalid.Load(), Overlaps: s.overlaps.Load(),
		Restarts: s.restarts.Load(),
	}
}

// Run consumes until ctx is done (then it returns nil) or the sink fails.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.deleting.Wait()
	const firstWait = 100 * time.Millisecond
	wait := firstWait
	lastLog := time.Time{}
	for ctx.Err() == nil {
		before := c.stats.messages.Load()
		elected := c.opts.Elections.Next() // before the requests, so none is missed
		err := c.consume(ctx, elected)
		if ctx.Err() != nil {
			return nil
		}
		var se sinkError
		if errors.As(err, &se) {
			return se.err
		}
		if c.stats.messages.Load() != before {
			// It ran: the back-off starts afresh.
			wait = firstWait
		}
		c.stats.restarts.Add(1)
		if time.Since(lastLog) > 10*time.Second {
			c.log.WithError(err).Warn("NATS: consumer stopped; creating it again")
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			wait = min(2*wait, 2*time.Second)
		case <-elected:
			wait = firstWait
			settle(ctx)
		}
	}
	return nil
}

// sinkError is the sink's error, which ends Run.
type sinkError struct{ err error }

func (e sinkError) Error() string { return e.err.Error() }

// createTimeout bounds one request to create the edge's consumer. It is
// answered in milliseconds by a cluster with a stream leader; with the
// leader just killed it may not be answered at all, and Run then tries
// again, with a new consumer name, after its back-off. (nats.go's own
// ordered consumer gives each such request 10 s, which stalled edges
// for over 10 s after a leader kill here.)
const createTimeout = 3 * time.Second

// deleteTimeout bounds the request that removes a consumer no longer
// read; Run, and so chattyd's stop, waits for it.
const deleteTimeout = time.Second

// inactiveThreshold is how long the server keeps a consumer nobody pulls
// from: one left behind by a request that timed out, or by an edge that
// died, is removed after it.
const inactiveThreshold = 5 * time.Minute

// consume creates a consumer where the edge is and hands on what it
// delivers until an error. The consumer is ephemeral, in memory, on one
// node, with no acknowledgements: what nats.go's ordered consumer makes,
// but made here, so that each attempt is bounded by createTimeout and
// every fault (a missed heartbeat, a reconnect, a delivery lost, a
// consumer the server deleted) comes back to Run, which starts over after
// the last message handed on.
func (c *Consumer) consume(ctx context.Context, elected <-chan struct{}) error {
	rctx, cancel := request(ctx, createTimeout, elected)
	defer cancel()
	st, err := c.js.Stream(rctx, c.opts.Stream)
	if err != nil {
		return requestErr(rctx, err)
	}
	c.stream = st
	cfg := jetstream.ConsumerConfig{
		// Named here, not by nats.go, so that one whose creation timed
		// out can be deleted too.
		Name:              nuid.Next(),
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: inactiveThreshold,
		Replicas:          1,
		MemoryStorage:     true,
	}
	switch seq := c.stats.streamSeq.Load(); {
	case seq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
	case c.opts.StartFirst:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case c.opts.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, c.opts.StartSeq
	}
	ended := make(chan struct{})
	defer close(ended)
	c.deleting.Go(func() {
		// Removed when this consume ends, so that an edge that starts
		// over leaves nothing behind on a server that answers; one that
		// does not answer drops it after inactiveThreshold.
		<-ended
		if !c.js.Conn().IsConnected() {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
		defer cancel()
		_ = c.js.DeleteConsumer(dctx, c.opts.Stream, cfg.Name)
	})
	// Reconnects are watched from before the consumer exists: messages
	// sent while the connection was down may be gone (no acks), and a
	// quiet stream would not show the jump for a long time.
	nc := c.js.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	cons, err := c.js.CreateConsumer(rctx, c.opts.Stream, cfg)
	if err != nil {
		return fmt.Errorf("create consumer: %w", requestErr(rctx, err))
	}
	cancel()
	if cfg.DeliverPolicy == jetstream.DeliverNewPolicy {
		// A consumer made again before anything was handed on starts
		// where this one did, not at what is new by then.
		c.opts.StartSeq = cons.CachedInfo().Delivered.Stream + 1
	}
	// Next is given no max wait: one shorter than twice the heartbeat
	// would turn off the detection of missed heartbeats, which Next
	// reports as an error (WithMessagesErrOnMissingHeartbeat). nats.go
	// takes a heartbeat of at most half a pull's expiry.
	it, err := cons.Messages(jetstream.PullHeartbeat(c.opts.Heartbeat), jetstream.PullExpiry(max(30*time.Second, 2*c.opts.Heartbeat)),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return err
	}
	defer it.Stop()
	// Next returns when nctx is done; RemoveStatusListener closes
	// reconnected only after stop(nil) has ended nctx.
	nctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	cancelWhen(nctx, stop, reconnected, errReconnected)
	for delivered := uint64(0); ; delivered++ {
		msg, err := it.Next(jetstream.NextContext(nctx))
		if err != nil {
			if cause := context.Cause(nctx); ctx.Err() == nil && cause != nil {
				return cause
			}
			return err
		}
		md, err := msg.Metadata()
		if err != nil {
			return err
		}
		// The consumer numbers its deliveries 1, 2, 3...; a jump is a
		// message lost on the way, which a new consumer from after the
		// last one handed on delivers again.
		if md.Sequence.Consumer != delivered+1 {
			return fmt.Errorf("%w: delivery %d after %d", errDeliveryLost, md.Sequence.Consumer, delivered)
		}
		if err := c.handle(ctx, msg, md); err != nil {
			return err
		}
	}
}

// errReconnected ends a consumer whose connection came back: what was
// sent to it meanwhile may be lost.
var errReconnected = errors.New("reconnected to NATS")

// errDeliveryLost is a consumer's delivery that did not arrive.
var errDeliveryLost = errors.New("a delivery of the consumer was lost")

// handle hands one message on, numbered, noting gaps and overlaps.
func (c *Consumer) handle(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) error {
	seq := md.Sequence.Stream
	log := c.log.WithField("stream_seq", seq)
	if prev := c.stats.streamSeq.Load(); prev > 0 && seq > prev+1 {
		log.WithField("after", prev).Warnf("NATS: %d stream messages are gone before this one", seq-prev-1)
	}
	d, err := Decode(msg.Headers(), msg.Data())
	if err != nil {
		c.stats.invalid.Add(1)
		log.WithError(err).Warn("NATS: message skipped")
		c.stats.streamSeq.Store(seq)
		return nil
	}
	first := d.First
	if first == 0 {
		// Numbered by the message before it.
		if c.want == 0 {
			end, err := lineEnd(ctx, c.stream, seq-1)
			if err != nil {
				return err
			}
			c.want = end + 1
		}
		first = c.want
	}
	lines := d.Lines
	switch {
	case c.want == 0:
	case first > c.want:
		n := first - c.want
		c.stats.gaps.Add(1)
		c.stats.gapLines.Add(n)
		log.WithFields(logrus.Fields{"from": c.want, "to": first - 1}).Errorf("NATS: gap: %d lines are not in the stream any more", n)
	case first < c.want:
		skip := c.want - first
		if time.Since(c.overlapLogged) > 10*time.Second {
			c.overlapLogged = time.Now()
			log.WithFields(logrus.Fields{"first": first, "want": c.want}).Error("NATS: lines numbered before the last one broadcast are skipped; if the stream was deleted and made again, restart chattyd")
		}
		if skip >= uint64(len(lines)) {
			c.stats.overlaps.Add(uint64(len(lines)))
			c.stats.streamSeq.Store(seq)
			return nil
		}
		c.stats.overlaps.Add(skip)
		lines, first = lines[skip:], c.want
	}
	if err := c.sink(first, lines); err != nil {
		return sinkError{err}
	}
	c.want = first + uint64(len(lines))
	c.stats.streamSeq.Store(seq)
	c.stats.lastSeq.Store(c.want - 1)
	c.stats.messages.Add(1)
	c.stats.lines.Add(uint64(len(lines)))
	return nil
}
