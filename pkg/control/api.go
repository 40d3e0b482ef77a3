// Package control holds chattyd's control API as its clients see it: the
// paths, the request and response types, and where the socket is. It is
// a leaf, so that a client (chattyctl, pkg/control/client) links none of
// the server's dependencies; the server is internal/controlserver. See
// docs/control.md.
package control

import (
	"time"
)

// The API's paths. Every request and response body is JSON, except /metrics.
const (
	PathStatus  = "/v1/status"   // GET: Status
	PathClients = "/v1/clients"  // GET: []Client
	PathWorkers = "/v1/workers"  // GET: []Worker
	PathSend    = "/v1/send"     // POST SendRequest: SendResponse
	PathScale   = "/v1/scale"    // POST ScaleRequest: ScaleResponse
	PathStop    = "/v1/stop"     // POST, no body: 202 StopResponse
	PathIdent   = "/v1/identity" // GET: Identity
	// PathDeadLetters lists the work queue's poison lines, PathRetry puts
	// one back; both answer 409 without a work queue.
	PathDeadLetters = "/v1/deadletters" // GET: []DeadLetter
	PathRetry       = "/v1/retry"       // POST RetryRequest: RetryResponse
	PathMetrics     = "/metrics"        // GET: Prometheus text format
)

// MaxRequestBytes bounds a request body.
const MaxRequestBytes = 64 << 10

// Status is the daemon's state as a whole.
type Status struct {
	Version string `json:"version"`
	// PID is the daemon's process ID, as its own PID namespace sees it.
	PID           int            `json:"pid,omitempty"`
	StartedAt     time.Time      `json:"started_at"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Listeners     []Listener     `json:"listeners"`
	Feed          FeedStatus     `json:"feed"`
	Clients       ClientsSummary `json:"clients"`
	Pool          PoolStatus     `json:"pool"`
	Stream        StreamStatus   `json:"stream"`
	// Queue is the work queue of broadcast.delivery: one; absent with
	// delivery all.
	Queue *QueueStatus `json:"queue,omitempty"`
	// NATS is the shared feed (nats: in the configuration); nil without.
	NATS *NATSStatus `json:"nats,omitempty"`
}

// QueueStatus describes the work queue that serves the text listener,
// and the sequenced listener if configured, with broadcast.delivery: one.
type QueueStatus struct {
	// Waiting counts the lines waiting for a worker, WaitingBytes their
	// bytes, and InFlight the lines handed out and not acknowledged.
	Waiting      int `json:"waiting"`
	WaitingBytes int `json:"waiting_bytes"`
	InFlight     int `json:"in_flight"`
	// OldestWaitingSeconds is how long the line at the front of the
	// queue has been in it; 0 when none waits.
	OldestWaitingSeconds float64 `json:"oldest_waiting_seconds"`
	// FeedHeld reports whether the queue is full, so that the feed is
	// not read.
	FeedHeld bool `json:"feed_held"`
	// Queued counts the lines ever queued (feed lines and messages sent),
	// Acked those acknowledged, Mismatched the acks that matched no line.
	Queued     uint64 `json:"queued"`
	Acked      uint64 `json:"acked"`
	Mismatched uint64 `json:"acks_mismatched"`
	// Redeliveries counts the lines handed out again; AckTimeouts the
	// workers disconnected for holding a line past ack_timeout.
	Redeliveries uint64 `json:"redeliveries"`
	AckTimeouts  uint64 `json:"ack_timeouts"`
	// DeadLetters is the number of poison lines set aside now;
	// DeadLettered counts every one ever set aside, DeadLettersDropped
	// those dropped from a full list.
	DeadLetters        int    `json:"dead_letters"`
	DeadLettered       uint64 `json:"dead_lettered"`
	DeadLettersDropped uint64 `json:"dead_letters_dropped"`
	// Workers are the connected workers with what each holds.
	Workers []QueueWorker `json:"workers"`
}

// QueueWorker is one worker connected to the work queue.
type QueueWorker struct {
	// ID is the connection's id, as in Client.ID.
	ID uint64 `json:"id"`
	// Listener is the listener it connected to: ListenerBroadcast (the
	// text protocol) or ListenerSequenced.
	Listener    string    `json:"listener"`
	Remote      string    `json:"remote"`
	ConnectedAt time.Time `json:"connected_at"`
	// InFlight counts the lines it holds unacknowledged.
	InFlight   int    `json:"in_flight"`
	Delivered  uint64 `json:"delivered"`
	Acked      uint64 `json:"acked"`
	Mismatched uint64 `json:"acks_mismatched"`
}

// DeadLetter is a poison line the work queue set aside.
type DeadLetter struct {
	Seq uint64 `json:"seq"`
	// Line is the line, as text (bytes that are not UTF-8 are replaced
	// by U+FFFD).
	Line string `json:"line"`
	// Deliveries counts the deliveries that ended without an ack.
	Deliveries int       `json:"deliveries"`
	At         time.Time `json:"at"`
}

// RetryRequest asks the work queue to queue a dead letter again.
type RetryRequest struct {
	Seq uint64 `json:"seq"`
}

// RetryResponse tells which line was queued again.
type RetryResponse struct {
	Seq uint64 `json:"seq"`
}

// NATSServerInProcess is NATSStatus.Server for a connection to the
// embedded server without a socket.
const NATSServerInProcess = "in-process"

// NATSStatus is the shared feed through a NATS JetStream stream.
type NATSStatus struct {
	// State is the connection's: connected, connecting, reconnecting,
	// draining or closed.
	State string `json:"state"`
	// Server is the URL of the server the connection is on,
	// NATSServerInProcess for the embedded server reached without a
	// socket; "" when none.
	Server string `json:"server,omitempty"`
	// Stream is the JetStream stream's name.
	Stream string `json:"stream"`
	// Reconnects counts the connection's reconnections.
	Reconnects uint64 `json:"reconnects"`
	// Elections counts the stream's leader elections seen.
	Elections uint64 `json:"elections"`
	// Embedded reports whether chattyd runs its own nats-server.
	Embedded bool              `json:"embedded"`
	Publish  NATSPublishStatus `json:"publish"`
	Consume  NATSConsumeStatus `json:"consume"`
	// WorkQueue is the pull from the work-queue stream, with
	// broadcast.delivery: one; nil otherwise (Consume is then unused).
	WorkQueue *NATSWorkQueueStatus `json:"work_queue,omitempty"`
}

// NATSWorkQueueStatus is this chattyd's pull from the work-queue stream
// shared by every chattyd (docs/scale-out.md).
type NATSWorkQueueStatus struct {
	// Consumer is the durable consumer's name.
	Consumer string `json:"consumer"`
	// Messages counts the lines pulled (one a message), Redelivered
	// those JetStream had delivered before (to a chattyd that was lost).
	Messages    uint64 `json:"messages"`
	Redelivered uint64 `json:"redelivered"`
	// Held is the lines pulled and not yet acknowledged to JetStream.
	Held int `json:"held"`
	// Acked counts the lines acknowledged to JetStream after a worker
	// acknowledged them; AckFailures the acknowledgements that failed
	// (the line comes again).
	Acked       uint64 `json:"acked"`
	AckFailures uint64 `json:"ack_failures"`
	// Terminated counts lines set aside here as dead letters (or not
	// decoding), which JetStream delivers no more.
	Terminated uint64 `json:"terminated"`
	// StreamSeq is the stream sequence of the last message pulled.
	StreamSeq uint64 `json:"stream_seq"`
}

// NATSPublishStatus is the publisher of chattyd's feed into the stream.
type NATSPublishStatus struct {
	// Window is the most batches published and not yet acknowledged;
	// Pending how many are now.
	Window  int `json:"window"`
	Pending int `json:"pending_acks"`
	// Buffered is the bytes of feed lines taken and not yet acknowledged.
	Buffered int64 `json:"buffered_bytes"`
	// Lines counts the lines acknowledged by the stream; LastSeq is the
	// sequence number of the last.
	Lines   uint64 `json:"lines"`
	LastSeq uint64 `json:"last_seq"`
	// Retries counts batches published again after a failure, Resyncs
	// the reads of the stream's numbering, Duplicates the retries found
	// stored already.
	Retries    uint64 `json:"retries"`
	Resyncs    uint64 `json:"resyncs"`
	Duplicates uint64 `json:"duplicates"`
	// HeldBack counts the times the feed waited for room in the buffer.
	HeldBack uint64 `json:"held_back"`
	// Abandoned counts lines not acknowledged when publishing stopped.
	Abandoned uint64 `json:"abandoned"`
}

// NATSConsumeStatus is the consumer that brings the stream to the
// listeners.
type NATSConsumeStatus struct {
	// StreamSeq is the stream sequence of the last message broadcast;
	// LastSeq the sequence number of its last line.
	StreamSeq uint64 `json:"stream_seq"`
	LastSeq   uint64 `json:"last_seq"`
	// Lines counts the lines broadcast from the stream.
	Lines uint64 `json:"lines"`
	// Gaps counts the times lines were missing from the stream (no
	// longer kept), GapLines the lines missing.
	Gaps     uint64 `json:"gaps"`
	GapLines uint64 `json:"gap_lines"`
	// Invalid counts messages skipped for not decoding.
	Invalid uint64 `json:"invalid"`
	// Restarts counts consumers created again after an error.
	Restarts uint64 `json:"restarts"`
}

// StreamStatus names the stream the feed's sequence numbers belong to and
// the part of it the listeners retain for clients that resume.
type StreamStatus struct {
	// ID is the stream's identity: chosen at random when chattyd starts,
	// or, with a nats section, derived from the NATS stream's name and
	// creation time. A sequence number means something only with it.
	ID string `json:"id"`
	// First and Last are the oldest and newest lines every listener can
	// still send; First is Last+1 when none is retained.
	First uint64 `json:"first_seq"`
	Last  uint64 `json:"last_seq"`
	// Bytes and Lines are what the listeners retain, over them all.
	Bytes int64 `json:"retained_bytes"`
	Lines int64 `json:"retained_lines"`
}

// Listener is one address the daemon listens on.
type Listener struct {
	Name     string `json:"name"`     // ListenerBroadcast, ListenerTLS, ListenerSigned or ListenerWebSocket
	Addr     string `json:"addr"`     // the bound address, such as "127.0.0.1:54321"
	Protocol string `json:"protocol"` // such as "tcp"
	Clients  int    `json:"clients"`  // clients connected to it now
}

// The names of the daemon's listeners in Status.Listeners.
const (
	ListenerBroadcast = "broadcast"           // the text protocol: broadcast.listen
	ListenerTLS       = "broadcast-tls"       // the text protocol over TLS: broadcast.tls
	ListenerSigned    = "broadcast-signed"    // the signed protocol: broadcast.signed
	ListenerSequenced = "broadcast-sequenced" // the sequenced protocol: broadcast.sequenced
	ListenerWebSocket = "broadcast-websocket" // WebSocket clients and the web page: broadcast.websocket
)

// The states of the feed.
const (
	FeedReading = "reading"
	FeedWaiting = "waiting" // for the FIFO's path to name a FIFO again
	FeedEOF     = "eof"
	FeedStopped = "stopped"
	// FeedStarting and FeedFailed: before the feed is first read, and
	// after it failed (the daemon then stops).
	FeedStarting = "starting"
	FeedFailed   = "failed"
)

// FeedStatus describes the feed the daemon reads lines from.
type FeedStatus struct {
	Source string `json:"source"` // "stdin", "fifo PATH", or the name systemd gave a FIFO
	State  string `json:"state"`  // FeedReading, FeedWaiting, FeedEOF, FeedStopped, or "starting" or "failed"
	// Detail says what a waiting feed waits for, such as "waiting for the
	// FIFO path /run/chattyd/feed to exist again".
	Detail string `json:"detail,omitempty"`
	Lines  uint64 `json:"lines"` // lines read
	Bytes  uint64 `json:"bytes"` // bytes read, terminators included
	// Dropped counts lines longer than the feed's limit, never broadcast.
	Dropped uint64 `json:"dropped"`
	// Undelivered counts lines broadcast while no client was connected:
	// feed lines and typed messages.
	Undelivered uint64 `json:"undelivered"`
}

// ClientsSummary counts the broadcaster's clients.
type ClientsSummary struct {
	Connected      int    `json:"connected"`
	Accepted       uint64 `json:"accepted"`
	Refused        uint64 `json:"refused"` // over max_clients
	SlowConsumers  uint64 `json:"slow_consumers"`
	IdleClosed     uint64 `json:"idle_closed"`
	AcksGood       uint64 `json:"acks_good"`
	AcksMismatched uint64 `json:"acks_mismatched"`
	// KeepAlives counts the keep-alives answered: KEEP_ALIVE_ACK lines
	// and signed PONGs written to clients.
	KeepAlives uint64 `json:"keep_alives"`
	// RejectedFrames counts signed frames from clients that failed
	// verification, each closing its client.
	RejectedFrames uint64 `json:"rejected_frames"`
	// TLSFailed counts clients that failed the TLS handshake (a missing
	// or untrusted client certificate included); they received nothing.
	TLSFailed uint64 `json:"tls_failed"`
	// AuthFailed counts clients of a listener that requires
	// authentication (signed, or WebSocket with auth: authorized_keys)
	// which did not authenticate; they received nothing.
	AuthFailed uint64 `json:"auth_failed"`
	// RateLimited counts signed client messages refused over their
	// client's rate.
	RateLimited uint64 `json:"rate_limited"`
	// UnknownLines counts the lines from text clients that were neither
	// ACK_RECEIVED nor KEEP_ALIVE, those of clients that left included.
	UnknownLines uint64 `json:"unknown_lines"`
	// Authenticating counts the connected clients of a listener that
	// requires authentication which have yet to authenticate.
	Authenticating int `json:"authenticating"`
	// UnauthenticatedRefused counts connections to such a listener closed
	// at once because its max_unauthenticated clients were
	// authenticating already; they received nothing.
	UnauthenticatedRefused uint64 `json:"unauthenticated_refused"`
	// Resumed counts clients that started at a sequence number (the
	// sequenced listener's START, a signed client's RESUME, a pool slot's
	// next worker); ResumeGaps
	// those told that lines they asked for are no longer retained, and
	// ResumeGapLines those lines.
	Resumed        uint64 `json:"resumed"`
	ResumeGaps     uint64 `json:"resume_gaps"`
	ResumeGapLines uint64 `json:"resume_gap_lines"`
}

// PoolStatus describes the worker pool.
type PoolStatus struct {
	Desired int `json:"desired"`
	Running int `json:"running"`
	// Restarts counts worker restarts since the daemon started, over every
	// slot there ever was; it never decreases.
	Restarts uint64 `json:"restarts"`
	// Replay is pool.replay: "unacked" or "none".
	Replay string `json:"replay"`
	// ReplayTotals adds up the replay counters of every slot there ever
	// was; they never decrease.
	ReplayTotals ReplayCounters `json:"replay_totals"`
	Slots        []Worker       `json:"slots"`
}

// ReplayCounters count how a slot's workers carried on where the
// previous one stopped (pool.replay: unacked).
type ReplayCounters struct {
	// Identified counts connections recognised as a slot's worker.
	Identified uint64 `json:"identified"`
	// Resumed counts workers that started after the last line their
	// predecessor acknowledged rather than live.
	Resumed uint64 `json:"resumed"`
	// Gaps counts workers that could not start there because retention
	// no longer held it; GapLines counts the lines they never got.
	Gaps     uint64 `json:"gaps"`
	GapLines uint64 `json:"gap_lines"`
	// Duplicates counts lines sent to a worker that ended without
	// acknowledging them; its successor is sent them again.
	Duplicates uint64 `json:"duplicates"`
}

// Client is one connected client of the broadcaster.
type Client struct {
	// ID is unique among the clients of every listener of the daemon.
	ID             uint64    `json:"id"`
	Remote         string    `json:"remote"`
	ConnectedAt    time.Time `json:"connected_at"`
	QueueBytes     int64     `json:"queue_bytes"`
	QueueLines     int64     `json:"queue_lines"`
	AckLag         int64     `json:"ack_lag"`
	LinesSent      uint64    `json:"lines_sent"`
	AcksGood       uint64    `json:"acks_good"`
	AcksMismatched uint64    `json:"acks_mismatched"`
	// KeepAlives counts the client's keep-alives answered.
	KeepAlives uint64 `json:"keep_alives"`
	// UnknownLines counts the client's lines that were neither
	// ACK_RECEIVED nor KEEP_ALIVE.
	UnknownLines uint64 `json:"unknown_lines"`
	// Key is the fingerprint of the key the client authenticated with,
	// on a signed listener that requires it.
	Key string `json:"key,omitempty"`
	// Listener is the name of the listener the client connected to, as
	// in Status.Listeners.
	Listener string `json:"listener,omitempty"`
}

// Worker is one slot of the worker pool.
type Worker struct {
	Slot          int       `json:"slot"`
	PID           int       `json:"pid"`   // 0 when no process runs
	State         string    `json:"state"` // such as "running", "backoff", "stopped"
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Restarts      int       `json:"restarts"`
	LastExit      string    `json:"last_exit"` // such as "exited with code 2"
	// Awaiting reports whether the slot's worker has started and its
	// connection is not identified yet.
	Awaiting bool `json:"awaiting,omitempty"`
	// LastAcked is the last line the slot's workers acknowledged, once
	// a worker's connection has ended (0 before).
	LastAcked uint64         `json:"last_acked"`
	Replay    ReplayCounters `json:"replay"`
}

// SendRequest asks the daemon to broadcast a typed message. Its body has
// exactly the keys "type" and "message", each once; so has every request
// body its own keys (see decodeStrict).
type SendRequest struct {
	// Type is a message type name, matched without regard to case.
	Type string `json:"type"`
	// Message is the text: one line, at most message.MaxTextBytes bytes,
	// without control characters other than tab (message.IsControl).
	Message string `json:"message"`
}

// SendResponse tells what was broadcast.
type SendResponse struct {
	// Seq is the sequence number the backend gave the line.
	Seq uint64 `json:"seq"`
	// Line is the line sent to clients of the text protocol, without its
	// "\n". Clients of the signed listener get the message with its type,
	// its text as the payload.
	Line string `json:"line"`
}

// ScaleRequest sets the number of workers. Workers is required.
type ScaleRequest struct {
	Workers int `json:"workers"`
}

// ScaleResponse gives the number of workers before and after.
type ScaleResponse struct {
	Old int `json:"old"`
	New int `json:"new"`
}

// StopResponse answers a stop request; the daemon stops after sending it.
type StopResponse struct {
	Stopping bool `json:"stopping"`
}

// Identity is the daemon's public identity: the key its signed listener
// signs with.
type Identity struct {
	// PublicKey is an OpenSSH authorized_keys line, "ssh-ed25519 AAAA...
	// chattyd", the form of the .pub file beside the key.
	PublicKey string `json:"public_key"`
	// Fingerprint is the key's OpenSSH SHA256 fingerprint.
	Fingerprint string `json:"fingerprint"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
}
