package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
)

// The work queue across machines (broadcast.delivery: one with nats):
// the feed is published, one line a message, into a stream with
// work-queue retention, and every chattyd pulls from one durable consumer
// as many messages as its workers have room for. A message is
// acknowledged to JetStream (double acked: the server confirms) only
// once a worker has acknowledged every line of it, so that the lines of a
// chattyd that died are given by JetStream to another after the
// consumer's ack wait. A live chattyd renews the ack wait of what it
// holds every third of it.
//
// A line's JetStream deliveries that ended without an ack (its chattyd
// lost) count as failed deliveries: a redelivered line arrives at the
// local queue with NumDelivered-1 failures, a suspect. A line the local
// queue sets aside as a dead letter is terminated in JetStream (a
// work-queue stream then drops it): it is kept in that chattyd's
// dead-letter list, as a dead letter of a single chattyd is.

// WorkStreamConfig is the JetStream configuration of the work-queue
// stream: work-queue retention on its one subject, and the replicas,
// storage, limits and duplicate window of s. A full stream refuses new
// lines (the publisher holds the feed back) rather than drop old ones.
func WorkStreamConfig(w config.NATSWorkQueue, s config.NATSStream) jetstream.StreamConfig {
	c := StreamConfig(s)
	c.Name = w.Stream
	c.Description = "chattyd's work queue"
	c.Subjects = []string{w.Subject}
	c.Retention = jetstream.WorkQueuePolicy
	c.Discard = jetstream.DiscardNew
	return c
}

// WorkConsumerConfig is the configuration of the durable consumer every
// chattyd shares. JetStream delivers a line at most maxDeliveries+1
// times: the last delivery is only for it to be set aside.
func WorkConsumerConfig(w config.NATSWorkQueue, maxDeliveries int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       w.Consumer,
		Description:   "chattyd workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.AckWait,
		MaxDeliver:    maxDeliveries + 1,
		MaxAckPending: w.MaxAckPending,
		FilterSubject: w.Subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// LocalQueue is what a WorkConsumer needs of the local work queue
// (workqueue.Queue).
type LocalQueue interface {
	PublishFrom(lines [][]byte, failures int, done func(acked bool))
	Room() int
	RoomChanged() <-chan struct{}
}

// WorkOptions configure a WorkConsumer.
type WorkOptions struct {
	Stream   string // the work-queue stream
	Consumer jetstream.ConsumerConfig
	// MaxPull bounds one pull request.
	MaxPull int
	// Acks is how many acknowledgements are in flight at once.
	Acks int
}

// WorkStats are a WorkConsumer's counters.
type WorkStats struct {
	Messages    uint64 // messages pulled
	Lines       uint64 // lines handed to the local queue
	Redelivered uint64 // of the messages, those delivered before
	Acked       uint64 // messages acknowledged to JetStream
	AckFailures uint64 // acknowledgements that failed (the line comes again)
	Terminated  uint64 // messages terminated: set aside as dead letters, or invalid
	Invalid     uint64
	Held        int    // messages pulled and not yet done
	StreamSeq   uint64 // stream sequence of the last message pulled
}

// WorkConsumer pulls the work-queue stream into a local queue. Build it
// with NewWorkConsumer, run it with Run.
type WorkConsumer struct {
	js   jetstream.JetStream
	q    LocalQueue
	opts WorkOptions
	log  *logrus.Entry

	stopPull     chan struct{} // closed by StopPulling
	stopPullOnce sync.Once

	mu       sync.Mutex // guards held and finished
	held     map[*heldMsg]struct{}
	finished []*heldMsg
	kick     chan struct{} // one token: finished has grown

	stats struct {
		messages, lines, redelivered          atomic.Uint64
		acked, ackFailures, terminated, inval atomic.Uint64
		streamSeq                             atomic.Uint64
	}
}

// heldMsg is a message pulled and not yet acknowledged or terminated.
type heldMsg struct {
	msg    jetstream.Msg
	seq    uint64 // stream sequence
	left   int    // lines not yet done
	failed bool   // a line of it was set aside
}

// NewWorkConsumer builds a consumer of the work-queue stream into q. It
// starts nothing; call Run.
func NewWorkConsumer(js jetstream.JetStream, q LocalQueue, opts WorkOptions, log *logrus.Entry) *WorkConsumer {
	opts.MaxPull = max(opts.MaxPull, 1)
	opts.Acks = max(opts.Acks, 1)
	return &WorkConsumer{
		js: js, q: q, opts: opts, log: log,
		stopPull: make(chan struct{}),
		held:     map[*heldMsg]struct{}{},
		kick:     make(chan struct{}, 1),
	}
}

// StopPulling makes Run pull nothing more; what it holds is still
// acknowledged as workers acknowledge it, until Run's context is done.
func (c *WorkConsumer) StopPulling() { c.stopPullOnce.Do(func() { close(c.stopPull) }) }

// Stats returns the counters.
func (c *WorkConsumer) Stats() WorkStats {
	c.mu.Lock()
	held := len(c.held)
	c.mu.Unlock()
	s := &c.stats
	return WorkStats{
		Messages: s.messages.Load(), Lines: s.lines.Load(), Redelivered: s.redelivered.Load(),
		Acked: s.acked.Load(), AckFailures: s.ackFailures.Load(), Terminated: s.terminated.Load(),
		Invalid: s.inval.Load(), Held: held, StreamSeq: s.streamSeq.Load(),
	}
}

// Run creates or updates the durable consumer, then pulls into the local
// queue until ctx is done, while it acknowledges what the workers have
// acknowledged and renews the ack wait of what they hold. When ctx is
// done it gives back (naks) what it holds, for other chattyd to take at
// once, and waits for the acknowledgements in flight. It returns nil
// after ctx is done.
func (c *WorkConsumer) Run(ctx context.Context) error {
	cons, err := c.ensureConsumer(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var wg sync.WaitGroup
	ackCtx, stopAcks := context.WithCancel(context.Background())
	wg.Go(func() { c.ackLoop(ackCtx) })
	wg.Go(func() { c.renewLoop(ctx) })
	c.pullLoop(ctx, cons)
	c.giveBack()
	stopAcks()
	wg.Wait()
	return nil
}

// ensureConsumer creates or updates the consumer, retrying while the
// servers cannot answer.
func (c *WorkConsumer) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := c.js.CreateOrUpdateConsumer(actx, c.opts.Stream, c.opts.Consumer)
		cancel()
		if err == nil {
			return cons, nil
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("work-queue stream %s: %w", c.opts.Stream, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt == 1 || attempt%20 == 0 {
			c.log.WithError(err).WithField("consumer", c.opts.Consumer.Durable).Warn("NATS: work-queue consumer not ready; retrying")
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// pullLoop pulls as many messages as the local workers have room for.
func (c *WorkConsumer) pullLoop(ctx context.Context, cons jetstream.Consumer) {
	wait := 100 * time.Millisecond
	lastLog := time.Time{}
	for ctx.Err() == nil {
		select {
		case <-c.stopPull:
			<-ctx.Done()
			return
		default:
		}
		n := min(c.q.Room(), c.opts.MaxPull)
		if n == 0 {
			select {
			case <-ctx.Done():
			case <-c.stopPull:
			case <-c.q.RoomChanged():
			}
			continue
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			if time.Since(lastLog) > 10*time.Second {
				c.log.WithError(err).Warn("NATS: cannot pull from the work queue; retrying")
				lastLog = time.Now()
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
		for msg := range batch.Messages() {
			c.take(msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			c.log.WithError(err).Debug("NATS: pull from the work queue ended")
		}
	}
}

// take hands a message's lines to the local queue.
func (c *WorkConsumer) take(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		c.log.WithError(err).Warn("NATS: work-queue message without metadata skipped")
		return
	}
	c.stats.messages.Add(1)
	c.stats.streamSeq.Store(md.Sequence.Stream)
	d, err := Decode(msg.Headers(), msg.Data())
	if err != nil {
		c.stats.inval.Add(1)
		c.log.WithError(err).WithField("stream_seq", md.Sequence.Stream).Warn("NATS: work-queue message terminated: it is not a chatty feed message")
		c.finish(&heldMsg{msg: msg, seq: md.Sequence.Stream, failed: true})
		return
	}
	failures := int(md.NumDelivered) - 1
	if failures > 0 {
		c.stats.redelivered.Add(1)
	}
	h := &heldMsg{msg: msg, seq: md.Sequence.Stream, left: len(d.Lines)}
	c.mu.Lock()
	c.held[h] = struct{}{}
	c.mu.Unlock()
	c.stats.lines.Add(uint64(len(d.Lines)))
	c.q.PublishFrom(d.Lines, failures, func(acked bool) { c.done(h, acked) })
}

// done records one line of h done; it is called with the local queue's
// lock held and only takes c.mu.
func (c *WorkConsumer) done(h *heldMsg, acked bool) {
	c.mu.Lock()
	if !acked {
		h.failed = true
	}
	h.left--
	last := h.left == 0
	if last {
		delete(c.held, h)
	}
	c.mu.Unlock()
	if last {
		c.finish(h)
	}
}

// finish queues h's acknowledgement, or its termination.
func (c *WorkConsumer) finish(h *heldMsg) {
	c.mu.Lock()
	c.finished = append(c.finished, h)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// ackLoop acknowledges finished messages, Acks at a time, until ctx is
// done and nothing is left.
func (c *WorkConsumer) ackLoop(ctx context.Context) {
	sem := make(chan struct{}, c.opts.Acks)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c.mu.Lock()
		batch := c.finished
		c.finished = nil
		c.mu.Unlock()
		for _, h := range batch {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				c.confirm(h)
			})
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-c.kick:
		case <-ctx.Done():
			c.mu.Lock()
			left := len(c.finished)
			c.mu.Unlock()
			if left == 0 {
				return
			}
		}
	}
}

// confirm double acks h, or terminates it when a line of it was set
// aside. An acknowledgement that fails is tried again once; then the
// line comes again after the ack wait, to this chattyd or another.
func (c *WorkConsumer) confirm(h *heldMsg) {
	if h.failed {
		if err := h.msg.TermWithReason("set aside as a dead letter by chattyd"); err != nil {
			c.log.WithError(err).WithField("stream_seq", h.seq).Warn("NATS: cannot terminate a dead letter; JetStream will deliver it again")
			return
		}
		c.stats.terminated.Add(1)
		return
	}
	var err error
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = h.msg.DoubleAck(ctx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			c.stats.acked.Add(1)
			return
		}
	}
	c.stats.ackFailures.Add(1)
	c.log.WithError(err).WithField("stream_seq", h.seq).Warn("NATS: acknowledgement of a work-queue line failed; JetStream will deliver it again")
}

// renewLoop tells JetStream, every third of the ack wait, that the
// messages held are still being worked on.
func (c *WorkConsumer) renewLoop(ctx context.Context) {
	every := max(c.opts.Consumer.AckWait/3, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		hs := make([]*heldMsg, 0, len(c.held))
		for h := range c.held {
			hs = append(hs, h)
		}
		c.mu.Unlock()
		for _, h := range hs {
			if err := h.msg.InProgress(); err != nil {
				c.log.WithError(err).WithField("stream_seq", h.seq).Debug("NATS: cannot renew a work-queue line's ack wait")
			}
		}
	}
}

// giveBack naks what is held at the end, so that other chattyd take it
// without waiting for the ack wait.
func (c *WorkConsumer) giveBack() {
	c.mu.Lock()
	hs := make([]*heldMsg, 0, len(c.held))
	for h := range c.held {
		hs = append(hs, h)
	}
	c.held = map[*heldMsg]struct{}{}
	c.mu.Unlock()
	for _, h := range hs {
		h.msg.Nak()
	}
	if len(hs) > 0 {
		// Before the connection closes: the naks are what lets others
		// take the lines at once.
		if err := c.js.Conn().FlushTimeout(2 * time.Second); err != nil {
			c.log.WithError(err).Warn("NATS: the work-queue lines given back may come again only after the ack wait")
		}
		c.log.Infof("NATS: %d work-queue lines not acknowledged by this chattyd's workers given back to the stream", len(hs))
	}
}
