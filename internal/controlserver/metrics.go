package controlserver

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// collector reads the backend's Status once per scrape and reports it as
// chatty_* metrics.
type collector struct {
	b Backend

	buildInfo, uptime                               *prometheus.Desc
	feedLines, feedBytes, feedDropped, feedUndeliv  *prometheus.Desc
	connected, accepted, refused, slow, idleClosed  *prometheus.Desc
	listenerClients                                 *prometheus.Desc
	authenticating, unauthRefused                   *prometheus.Desc
	acksGood, acksMismatched, keepAlives, rejected  *prometheus.Desc
	tlsFailed, authFailed, rateLimited              *prometheus.Desc
	unknownLines                                    *prometheus.Desc
	poolDesired, poolRunning, poolRestarts          *prometheus.Desc
	replayIdentified, replayResumed, replayGaps     *prometheus.Desc
	replayGapLines, replayDuplicates                *prometheus.Desc
	retainedBytes, retainedLines, firstSeq, lastSeq *prometheus.Desc
	resumed, resumeGaps, resumeGapLines             *prometheus.Desc
	// The work queue's, reported only with broadcast.delivery: one.
	qWaiting, qInFlight, qOldest, qHeld          *prometheus.Desc
	qQueued, qAcked, qRedelivered, qAckTimeouts  *prometheus.Desc
	qDeadLetters, qDeadLettered, qWorkerInFlight *prometheus.Desc
	nats                                         natsDescs
}

// natsDescs are the shared feed's metrics, reported with a nats: section.
type natsDescs struct {
	connected, reconnects, elections                        *prometheus.Desc
	window, pending, buffered, lines, lastSeq               *prometheus.Desc
	retries, resyncs, duplicates, heldBack, abandoned       *prometheus.Desc
	consumedLines, consumedSeq, gaps, gapLines, invalid, cr *prometheus.Desc
	// The work queue across machines, with delivery: one.
	wqPulled, wqRedelivered, wqHeld, wqAcked, wqAckFailures, wqTerminated *prometheus.Desc
}

func (n natsDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{n.connected, n.reconnects, n.elections, n.window, n.pending, n.buffered, n.lines, n.lastSeq,
		n.retries, n.resyncs, n.duplicates, n.heldBack, n.abandoned,
		n.consumedLines, n.consumedSeq, n.gaps, n.gapLines, n.invalid, n.cr,
		n.wqPulled, n.wqRedelivered, n.wqHeld, n.wqAcked, n.wqAckFailures, n.wqTerminated}
}

func newCollector(b Backend) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("chatty_"+name, help, labels, nil)
	}
	return &collector{
		b:               b,
		buildInfo:       d("build_info", "Always 1; the version label is chattyd's version.", "version"),
		uptime:          d("uptime_seconds", "Seconds since chattyd started."),
		feedLines:       d("feed_lines_total", "Lines read from the feed."),
		feedBytes:       d("feed_bytes_total", "Bytes read from the feed, terminators included."),
		feedDropped:     d("feed_dropped_lines_total", "Feed lines dropped for being longer than the limit."),
		feedUndeliv:     d("feed_undelivered_lines_total", "Lines broadcast while no client was connected, feed lines and messages."),
		connected:       d("clients_connected", "Clients connected now."),
		listenerClients: d("listener_clients", "Clients connected now to each listener.", "listener"),
		accepted:        d("clients_accepted_total", "Client connections accepted."),
		refused:         d("clients_refused_total", "Client connections refused over max_clients."),
		authenticating:  d("clients_authenticating", "Clients of the signed listener connected now that have yet to authenticate."),
		unauthRefused:   d("clients_unauthenticated_refused_total", "Connections to the signed listener closed at once because max_unauthenticated clients were authenticating."),
		slow:            d("clients_slow_consumers_total", "Clients disconnected for falling too far behind."),
		idleClosed:      d("clients_idle_closed_total", "Clients disconnected for sending nothing for too long."),
		acksGood:        d("acks_good_total", "Acknowledgements whose length matched the line sent."),
		acksMismatched:  d("acks_mismatched_total", "Acknowledgements whose length did not match."),
		keepAlives:      d("keepalives_answered_total", "Keep-alives answered: KEEP_ALIVE_ACK lines and signed PONGs written."),
		rejected:        d("clients_rejected_frames_total", "Signed frames from clients that failed verification."),
		tlsFailed:       d("clients_tls_failed_total", "Clients that failed the TLS handshake and received nothing."),
		authFailed:      d("clients_auth_failed_total", "Clients of a listener that requires authentication (signed, WebSocket) that failed it and received nothing."),
		rateLimited:     d("clients_rate_limited_messages_total", "Signed client messages refused over their client's rate."),
		unknownLines:    d("clients_unknown_lines_total", "Lines from text clients that were neither ACK_RECEIVED nor KEEP_ALIVE."),
		poolDesired:     d("pool_workers_desired", "Worker slots the pool should run."),
		poolRunning:     d("pool_workers_running", "Worker processes running now."),
		poolRestarts:    d("pool_restarts_total", "Worker restarts since chattyd started."),

		qWaiting:         d("queue_lines_waiting", "Work queue: lines waiting for a worker."),
		qInFlight:        d("queue_lines_in_flight", "Work queue: lines handed to workers and not acknowledged."),
		qOldest:          d("queue_oldest_waiting_seconds", "Work queue: age of the line at the front of the queue; 0 when none waits."),
		qHeld:            d("queue_feed_held", "Work queue: 1 while the queue is full and the feed is not read."),
		qQueued:          d("queue_lines_total", "Work queue: lines queued, feed lines and messages."),
		qAcked:           d("queue_acked_total", "Work queue: lines acknowledged by their worker."),
		qRedelivered:     d("queue_redeliveries_total", "Work queue: lines handed out again after their worker lost them."),
		qAckTimeouts:     d("queue_ack_timeouts_total", "Work queue: workers disconnected for holding a line past ack_timeout."),
		qDeadLetters:     d("queue_dead_letters", "Work queue: poison lines in the dead-letter list."),
		qDeadLettered:    d("queue_dead_lettered_total", "Work queue: poison lines set aside after max_deliveries."),
		qWorkerInFlight:  d("queue_worker_lines_in_flight", "Work queue: lines one connected worker holds unacknowledged, by its connection and the listener it connected to.", "client", "listener"),
		resumed:          d("clients_resumed_total", "Clients that started at a sequence number: sequenced clients' START, WebSocket clients' from=, pool slots' next workers."),
		resumeGaps:       d("clients_resume_gaps_total", "Resuming clients told that lines they asked for are no longer retained."),
		resumeGapLines:   d("clients_resume_gap_lines_total", "Lines resuming clients asked for that were no longer retained."),
		retainedBytes:    d("stream_retained_bytes", "Bytes of the feed the listeners retain for clients that resume, over them all."),
		retainedLines:    d("stream_retained_lines", "Lines of the feed every listener retains for clients that resume."),
		firstSeq:         d("stream_first_seq", "Sequence number of the oldest line every listener can still send.", "stream"),
		lastSeq:          d("stream_last_seq", "Sequence number of the newest line published.", "stream"),
		replayIdentified: d("pool_replay_identified_total", "Connections recognised as a pool slot's worker."),
		replayResumed:    d("pool_replay_resumed_total", "Workers that started after their slot's last acknowledged line (pool.replay: unacked)."),
		replayGaps:       d("pool_replay_gaps_total", "Workers that could not start after their slot's last acknowledged line: retention no longer held it."),
		replayGapLines:   d("pool_replay_gap_lines_total", "Lines that slots never got because retention no longer held them."),
		replayDuplicates: d("pool_replay_duplicate_lines_total", "Lines sent to a worker that ended without acknowledging them, and so sent again to its successor."),
		nats: natsDescs{
			connected:     d("nats_connected", "1 while the connection to NATS is up, else 0.", "stream"),
			reconnects:    d("nats_reconnects_total", "Reconnections to NATS."),
			elections:     d("nats_stream_elections_total", "Leader elections of the stream seen (their advisories)."),
			window:        d("nats_publish_window", "Most batches published into the stream and not yet acknowledged."),
			pending:       d("nats_publish_pending_acks", "Batches published into the stream and not yet acknowledged."),
			buffered:      d("nats_publish_buffered_bytes", "Bytes of feed lines taken and not yet acknowledged by the stream."),
			lines:         d("nats_published_lines_total", "Feed lines acknowledged by the stream."),
			lastSeq:       d("nats_published_last_seq", "Sequence number of the last line the stream acknowledged from this chattyd."),
			retries:       d("nats_publish_retries_total", "Batches published again after a failure."),
			resyncs:       d("nats_publish_resyncs_total", "Reads of the stream's numbering (at start and after failures)."),
			duplicates:    d("nats_publish_duplicates_total", "Retried batches the stream had stored already."),
			heldBack:      d("nats_publish_held_back_total", "Times the feed waited for room in the publisher's buffer."),
			abandoned:     d("nats_publish_abandoned_lines_total", "Lines not acknowledged when publishing stopped."),
			consumedLines: d("nats_consumed_lines_total", "Lines broadcast from the stream."),
			consumedSeq:   d("nats_consumed_stream_seq", "Stream sequence of the last message broadcast."),
			gaps:          d("nats_gaps_total", "Times lines this chattyd needed were no longer in the stream."),
			gapLines:      d("nats_gap_lines_total", "Lines this chattyd needed that were no longer in the stream."),
			invalid:       d("nats_invalid_messages_total", "Stream messages skipped for not being chatty feed messages."),
			cr:            d("nats_consumer_restarts_total", "Consumers of the stream created again after an error."),
			wqPulled:      d("nats_work_queue_pulled_lines_total", "Lines pulled from the work-queue stream."),
			wqRedelivered: d("nats_work_queue_redelivered_lines_total", "Lines pulled that JetStream had delivered before, to a chattyd that was lost."),
			wqHeld:        d("nats_work_queue_held_lines", "Lines pulled and not yet acknowledged to JetStream."),
			wqAcked:       d("nats_work_queue_acked_lines_total", "Lines acknowledged to JetStream after a worker acknowledged them."),
			wqAckFailures: d("nats_work_queue_ack_failures_total", "Acknowledgements to JetStream that failed; the line comes again."),
			wqTerminated:  d("nats_work_queue_terminated_lines_total", "Lines set aside here as dead letters, or not decoding, and terminated in JetStream."),
		},
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.buildInfo, c.uptime,
		c.feedLines, c.feedBytes, c.feedDropped, c.feedUndeliv,
		c.connected, c.accepted, c.refused, c.slow, c.idleClosed, c.listenerClients,
		c.authenticating, c.unauthRefused,
		c.acksGood, c.acksMismatched, c.keepAlives, c.rejected,
		c.tlsFailed, c.authFailed, c.rateLimited,
		c.unknownLines,
		c.poolDesired, c.poolRunning, c.poolRestarts,
		c.qWaiting, c.qInFlight, c.qOldest, c.qHeld,
		c.qQueued, c.qAcked, c.qRedelivered, c.qAckTimeouts,
		c.qDeadLetters, c.qDeadLettered, c.qWorkerInFlight,
		c.replayIdentified, c.replayResumed, c.replayGaps, c.replayGapLines, c.replayDuplicates,
		c.retainedBytes, c.retainedLines, c.firstSeq, c.lastSeq,
		c.resumed, c.resumeGaps, c.resumeGapLines,
	} {
		ch <- d
	}
	for _, d := range c.nats.all() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(c.buildInfo, 1, st.Version)
	gauge(c.uptime, st.UptimeSeconds)
	counter(c.feedLines, st.Feed.Lines)
	counter(c.feedBytes, st.Feed.Bytes)
	counter(c.feedDropped, st.Feed.Dropped)
	counter(c.feedUndeliv, st.Feed.Undelivered)
	gauge(c.connected, float64(st.Clients.Connected))
	for _, l := range st.Listeners {
		gauge(c.listenerClients, float64(l.Clients), l.Name)
	}
	counter(c.accepted, st.Clients.Accepted)
	counter(c.refused, st.Clients.Refused)
	gauge(c.authenticating, float64(st.Clients.Authenticating))
	counter(c.unauthRefused, st.Clients.UnauthenticatedRefused)
	counter(c.slow, st.Clients.SlowConsumers)
	counter(c.idleClosed, st.Clients.IdleClosed)
	counter(c.acksGood, st.Clients.AcksGood)
	counter(c.acksMismatched, st.Clients.AcksMismatched)
	counter(c.keepAlives, st.Clients.KeepAlives)
	counter(c.rejected, st.Clients.RejectedFrames)
	counter(c.tlsFailed, st.Clients.TLSFailed)
	counter(c.authFailed, st.Clients.AuthFailed)
	counter(c.rateLimited, st.Clients.RateLimited)
	counter(c.unknownLines, st.Clients.UnknownLines)
	gauge(c.poolDesired, float64(st.Pool.Desired))
	gauge(c.poolRunning, float64(st.Pool.Running))
	counter(c.poolRestarts, st.Pool.Restarts)
	r := st.Pool.ReplayTotals
	counter(c.replayIdentified, r.Identified)
	counter(c.replayResumed, r.Resumed)
	counter(c.replayGaps, r.Gaps)
	counter(c.replayGapLines, r.GapLines)
	counter(c.replayDuplicates, r.Duplicates)
	counter(c.resumed, st.Clients.Resumed)
	counter(c.resumeGaps, st.Clients.ResumeGaps)
	counter(c.resumeGapLines, st.Clients.ResumeGapLines)
	gauge(c.retainedBytes, float64(st.Stream.Bytes))
	gauge(c.retainedLines, float64(st.Stream.Lines))
	gauge(c.firstSeq, float64(st.Stream.First), st.Stream.ID)
	gauge(c.lastSeq, float64(st.Stream.Last), st.Stream.ID)
	if n := st.NATS; n != nil {
		up := 0.0
		if n.State == "connected" {
			up = 1
		}
		gauge(c.nats.connected, up, n.Stream)
		counter(c.nats.reconnects, n.Reconnects)
		counter(c.nats.elections, n.Elections)
		gauge(c.nats.window, float64(n.Publish.Window))
		gauge(c.nats.pending, float64(n.Publish.Pending))
		gauge(c.nats.buffered, float64(n.Publish.Buffered))
		counter(c.nats.lines, n.Publish.Lines)
		gauge(c.nats.lastSeq, float64(n.Publish.LastSeq))
		counter(c.nats.retries, n.Publish.Retries)
		counter(c.nats.resyncs, n.Publish.Resyncs)
		counter(c.nats.duplicates, n.Publish.Duplicates)
		counter(c.nats.heldBack, n.Publish.HeldBack)
		counter(c.nats.abandoned, n.Publish.Abandoned)
		counter(c.nats.consumedLines, n.Consume.Lines)
		gauge(c.nats.consumedSeq, float64(n.Consume.StreamSeq))
		counter(c.nats.gaps, n.Consume.Gaps)
		counter(c.nats.gapLines, n.Consume.GapLines)
		counter(c.nats.invalid, n.Consume.Invalid)
		counter(c.nats.cr, n.Consume.Restarts)
		if w := n.WorkQueue; w != nil {
			counter(c.nats.wqPulled, w.Messages)
			counter(c.nats.wqRedelivered, w.Redelivered)
			gauge(c.nats.wqHeld, float64(w.Held))
			counter(c.nats.wqAcked, w.Acked)
			counter(c.nats.wqAckFailures, w.AckFailures)
			counter(c.nats.wqTerminated, w.Terminated)
		}
	}
	q := st.Queue
	if q == nil {
		return
	}
	held := 0.0
	if q.FeedHeld {
		held = 1
	}
	gauge(c.qWaiting, float64(q.Waiting))
	gauge(c.qInFlight, float64(q.InFlight))
	gauge(c.qOldest, q.OldestWaitingSeconds)
	gauge(c.qHeld, held)
	counter(c.qQueued, q.Queued)
	counter(c.qAcked, q.Acked)
	counter(c.qRedelivered, q.Redeliveries)
	counter(c.qAckTimeouts, q.AckTimeouts)
	gauge(c.qDeadLetters, float64(q.DeadLetters))
	counter(c.qDeadLettered, q.DeadLettered)
	for _, w := range q.Workers {
		gauge(c.qWorkerInFlight, float64(w.InFlight), strconv.FormatUint(w.ID, 10), w.Listener)
	}
}

// metricsHandler serves a private registry: the backend's metrics and the
// Go runtime's and process's, never the global registry.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCollector(s.b),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      newStdLogger(s.log),
		ErrorHandling: promhttp.ContinueOnError,
	})
}
