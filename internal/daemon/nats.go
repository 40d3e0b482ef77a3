package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatty-dev/chatty/internal/broadcast"
	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/natsfeed"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/internal/version"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
)

// natsStartTimeout bounds how long New waits for the stream, which gives
// the listeners their stream identity and first sequence number.
const natsStartTimeout = 60 * time.Second

// natsHeaderRoom is what a stream message keeps of the server's max_payload
// for its headers; config holds nats.publish.batch_bytes below 1 MiB by it.
const natsHeaderRoom = 4096

// sharedFeed is the daemon's part of the shared feed (nats:): the
// embedded server if any, the connection, the publisher of this daemon's
// feed and the consumer that brings the stream to the listeners.
type sharedFeed struct {
	log       *logrus.Entry
	cfg       config.NATS
	embedded  *natsfeed.Embedded // nil without nats.embedded
	conn      *natsfeed.Conn
	stream    string // the NATS stream's name
	publisher *natsfeed.Publisher
	consumer  *natsfeed.Consumer     // the broadcast stream back to the listeners; nil with work
	work      *natsfeed.WorkConsumer // the work-queue stream into the work queue (delivery: one); else nil
	elections *natsfeed.Elections    // the stream's leader elections, which wake publisher and consumer
}

// startSharedFeed starts the embedded server if configured, connects,
// finds or creates the stream, and sets the listeners' stream identity
// and first sequence number from it. Nothing runs until Run adds the
// members.
func startSharedFeed(cfg config.Config, l *listeners, logger *logrus.Logger) (_ *sharedFeed, err error) {
	n := cfg.NATS
	log := logger.WithField(logging.FieldComponent, "nats")
	f := &sharedFeed{log: log, cfg: n, stream: n.Stream.Name}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	opts := natsfeed.ConnOptions{
		Name:       "chattyd " + version.String(),
		AckTimeout: n.Publish.AckTimeout,
		Window:     n.Publish.Window,
	}
	if n.Embedded.Enabled {
		if f.embedded, err = natsfeed.NewEmbedded(n.Embedded, logger.WithField(logging.FieldComponent, "nats-server")); err != nil {
			return nil, err
		}
		if err = f.embedded.Start(30 * time.Second); err != nil {
			f.embedded = nil
			return nil, err
		}
		opts.InProcess = f.embedded.Server()
	}
	if f.conn, err = natsfeed.Connect(n, opts, log); err != nil {
		return nil, err
	}
	// A message larger than the server takes is refused every time it is
	// published again: batches are kept below it, and a line that cannot
	// fit is refused now rather than held back forever.
	batchBytes := n.Publish.BatchBytes
	if limit := int(f.conn.NC.MaxPayload()) - natsHeaderRoom; limit < batchBytes {
		if limit < cfg.Feed.MaxLineBytes+1 {
			return nil, fmt.Errorf("nats: the server takes messages of at most %d bytes (its max_payload), too small for a line of feed.max_line_bytes (%d) and its headers; lower feed.max_line_bytes below %d or raise max_payload", f.conn.NC.MaxPayload(), cfg.Feed.MaxLineBytes, limit)
		}
		log.WithFields(logrus.Fields{"batch_bytes": batchBytes, "max_payload": f.conn.NC.MaxPayload()}).Warnf("NATS: the server's max_payload is below nats.publish.batch_bytes; batches are kept to %d bytes", limit)
		batchBytes = limit
	}
	ctx, cancel := context.WithTimeout(context.Background(), natsStartTimeout)
	defer cancel()
	if l.queue != nil {
		return f, f.startWork(ctx, cfg, l)
	}
	st, err := natsfeed.EnsureStream(ctx, f.conn.JS, n.Stream, log)
	if err != nil {
		return nil, fmt.Errorf("nats.stream.name: %w; chattyd needs the stream to start", err)
	}
	var info *jetstream.StreamInfo
	var start natsfeed.Start
	err = poll.Until(ctx, natsStartTimeout, func() bool {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		defer acancel()
		i, ierr := st.Info(actx)
		if ierr != nil {
			err = ierr
			return false
		}
		start, err = natsfeed.StartPoint(actx, st, n.Consume.Start == config.StartFirst, n.Consume.Start.Seq())
		info = i
		return err == nil
	})
	if err != nil || info == nil {
		return nil, fmt.Errorf("nats: reading stream %s: %v", n.Stream.Name, err)
	}
	if f.elections, err = natsfeed.WatchElections(f.conn.NC, n.Stream.Name); err != nil {
		return nil, fmt.Errorf("nats: watching stream %s's elections: %w", n.Stream.Name, err)
	}
	id := natsfeed.StreamID(info)
	l.setStream(id, start.Line)
	log.WithFields(logrus.Fields{"stream": n.Stream.Name, "stream_id": id, "stream_seq": start.StreamSeq, "first_line": start.Line}).
		Info("Shared feed: broadcasting the NATS stream")

	f.publisher = natsfeed.NewPublisher(f.conn.JS, st, natsfeed.PublisherOptions{
		Subject:     n.Stream.Subjects[0],
		Window:      n.Publish.Window,
		BufferBytes: n.Publish.BufferBytes,
		BatchLines:  n.Publish.BatchLines,
		BatchBytes:  batchBytes,
		Drain:       cfg.Broadcast.DrainTimeout,
		Elections:   f.elections,
	}, log.WithField(logging.FieldScope, "publisher"))
	f.consumer = natsfeed.NewConsumer(f.conn.JS, natsfeed.ConsumerOptions{
		Stream:    n.Stream.Name,
		Heartbeat: n.Consume.Heartbeat,
		StartSeq:  start.StreamSeq,
		NextLine:  start.Line,
		Elections: f.elections,
	}, l.publishAt(log.WithField(logging.FieldScope, "consumer")), log.WithField(logging.FieldScope, "consumer"))
	return f, nil
}

// startWork sets up the work queue across machines: the work-queue
// stream, the publisher of this daemon's feed into it, one line a
// message, and the pull of the shared consumer into the local queue.
func (f *sharedFeed) startWork(ctx context.Context, cfg config.Config, l *listeners) error {
	n, w := cfg.NATS, cfg.NATS.WorkQueue
	f.stream = w.Stream
	var st jetstream.Stream
	var err error
	if n.Stream.Create {
		st, err = natsfeed.EnsureWorkStream(ctx, f.conn.JS, natsfeed.WorkStreamConfig(w, n.Stream), f.log)
	} else {
		st, err = natsfeed.EnsureStream(ctx, f.conn.JS, config.NATSStream{Name: w.Stream}, f.log)
	}
	if err != nil {
		return fmt.Errorf("nats.work_queue: %w; chattyd needs the stream to start", err)
	}
	if f.elections, err = natsfeed.WatchElections(f.conn.NC, w.Stream); err != nil {
		return fmt.Errorf("nats: watching stream %s's elections: %w", w.Stream, err)
	}
	f.log.WithFields(logrus.Fields{"stream": w.Stream, "subject": w.Subject, "consumer": w.Consumer}).
		Info("Work queue across machines: pulling lines from the NATS work-queue stream")
	f.publisher = natsfeed.NewPublisher(f.conn.JS, st, natsfeed.PublisherOptions{
		Subject:     w.Subject,
		Window:      n.Publish.Window,
		BufferBytes: n.Publish.BufferBytes,
		BatchLines:  1,                    // a line is acknowledged, and redelivered, alone
		BatchBytes:  n.Publish.BatchBytes, // one line, which fits: startSharedFeed checked
		Drain:       cfg.Broadcast.DrainTimeout,
		Unnumbered:  true,
		Elections:   f.elections,
	}, f.log.WithField(logging.FieldScope, "publisher"))
	f.work = natsfeed.NewWorkConsumer(f.conn.JS, l.queue, natsfeed.WorkOptions{
		Stream:   w.Stream,
		Consumer: natsfeed.WorkConsumerConfig(w, cfg.Broadcast.WorkQueue.MaxDeliveries),
		MaxPull:  1024,
		Acks:     32,
	}, f.log.WithField(logging.FieldScope, "work-queue"))
	return nil
}

// run adds the publisher and the consumer to the group.
func (f *sharedFeed) run(g *group, pubCtx, consCtx context.Context) {
	g.add("nats-publisher", func() error { return f.publisher.Run(pubCtx) })
	if f.work != nil {
		g.add("nats-consumer", func() error { return f.work.Run(consCtx) })
	} else {
		g.add("nats-consumer", func() error { return f.consumer.Run(consCtx) })
	}
}

// publish puts feed lines into the stream; it blocks while the
// publisher's buffer is full, which holds the feed back.
func (f *sharedFeed) publish(ctx context.Context, lines [][]byte) {
	if err := f.publisher.Publish(ctx, lines); err != nil && ctx.Err() == nil {
		f.log.WithError(err).Errorf("%d feed lines not published", len(lines))
	}
}

// waitConsumed waits, up to timeout, until the consumer has handed on
// what the publisher had acknowledged, so that a daemon stopping
// broadcasts its own last lines.
func (f *sharedFeed) waitConsumed(timeout time.Duration) {
	if f.consumer == nil {
		return // the work queue: other daemons may take them
	}
	want := f.publisher.Stats().StreamSeq
	poll.Until(context.Background(), timeout, func() bool { return f.consumer.Stats().StreamSeq >= want })
}

// close closes the connection and stops the embedded server.
func (f *sharedFeed) close() {
	f.elections.Stop()
	if f.conn != nil {
		f.conn.Close()
	}
	if f.embedded != nil {
		f.embedded.Shutdown()
	}
}

// status reports the shared feed for chattyctl status and /metrics.
func (f *sharedFeed) status() *control.NATSStatus {
	p := f.publisher.Stats()
	var c natsfeed.ConsumerStats
	if f.consumer != nil {
		c = f.consumer.Stats()
	}
	var wq *control.NATSWorkQueueStatus
	if f.work != nil {
		ws := f.work.Stats()
		wq = &control.NATSWorkQueueStatus{
			Consumer: f.cfg.WorkQueue.Consumer, Messages: ws.Messages, Redelivered: ws.Redelivered,
			Held: ws.Held, Acked: ws.Acked, AckFailures: ws.AckFailures, Terminated: ws.Terminated,
			StreamSeq: ws.StreamSeq,
		}
	}
	return &control.NATSStatus{
		WorkQueue:  wq,
		State:      f.conn.State(),
		Server:     f.conn.Server(),
		Stream:     f.stream,
		Reconnects: f.conn.Reconnects(),
		Elections:  f.elections.Seen(),
		Embedded:   f.embedded != nil,
		Publish: control.NATSPublishStatus{
			Window:     p.Window,
			Pending:    p.Pending,
			Buffered:   p.Buffered,
			Lines:      p.Lines,
			LastSeq:    p.LastSeq,
			Retries:    p.Retries,
			Resyncs:    p.Resyncs,
			HeldBack:   p.HeldBack,
			Duplicates: p.Duplicates,
			Abandoned:  p.Abandoned,
		},
		Consume: control.NATSConsumeStatus{
			StreamSeq: c.StreamSeq,
			LastSeq:   c.LastSeq,
			Lines:     c.Lines,
			Gaps:      c.Gaps,
			GapLines:  c.GapLines,
			Invalid:   c.Invalid,
			Restarts:  c.Restarts,
		},
	}
}

// publishAt is the consumer's sink: the stream's lines go to every
// listener at their global sequence numbers. Lines behind the log's end
// (which the consumer does not hand on) are logged and dropped.
func (l *listeners) publishAt(log *logrus.Entry) natsfeed.Sink {
	return func(first uint64, lines [][]byte) error {
		l.pubMu.Lock()
		defer l.pubMu.Unlock()
		for _, s := range l.servers {
			if err := s.PublishAt(first, lines); err != nil {
				if errors.Is(err, broadcast.ErrSequence) {
					log.WithError(err).WithField("seq", first).Error("Lines from the stream dropped")
					return nil
				}
				return err
			}
		}
		return nil
	}
}

// setStream gives every server the stream's identity and the sequence
// number of the first line to come, before they run.
func (l *listeners) setStream(id string, first uint64) {
	l.stream = id
	for _, s := range l.servers {
		s.SetStream(id)
		s.SetStart(first)
	}
}
