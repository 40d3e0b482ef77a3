package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// NATS configures the shared feed: chattyd instances that publish their
// feed into one NATS JetStream stream and broadcast what comes back from
// it (docs/scale-out.md). Without URLs and without an embedded server
// chattyd uses no NATS at all.
type NATS struct {
	// URLs are the NATS servers to connect to, nats://host:port; empty
	// connects to the embedded server when Embedded.Enabled.
	URLs []string `yaml:"urls"`
	// CredentialsFile is a NATS credentials file (JWT and NKey seed).
	CredentialsFile string `yaml:"credentials_file"`
	// NKeyFile is a file holding an NKey seed, for NKey authentication.
	NKeyFile string `yaml:"nkey_file"`
	// TLS configures the client side of TLS to the NATS servers.
	TLS NATSTLS `yaml:"tls"`
	// Stream is the JetStream stream the feed goes through.
	Stream NATSStream `yaml:"stream"`
	// Publish configures how the feed goes into the stream.
	Publish NATSPublish `yaml:"publish"`
	// Consume configures how the stream comes back to the broadcaster.
	Consume NATSConsume `yaml:"consume"`
	// WorkQueue is the work-queue stream that broadcast.delivery: one
	// takes its lines from.
	WorkQueue NATSWorkQueue `yaml:"work_queue"`
	// Embedded runs a NATS server with JetStream inside chattyd.
	Embedded NATSEmbedded `yaml:"embedded"`
}

// NATSWorkQueue is the work queue across machines (broadcast.delivery:
// one with nats): a JetStream stream with work-queue retention and one
// durable pull consumer that every chattyd shares (docs/scale-out.md,
// "The work queue across machines"). The stream takes its replicas,
// storage, limits and duplicate window from nats.stream.
type NATSWorkQueue struct {
	// Stream is the work-queue stream's name.
	Stream string `yaml:"stream"`
	// Subject is the subject the lines are published on, the stream's
	// only subject.
	Subject string `yaml:"subject"`
	// Consumer is the name of the durable consumer every chattyd pulls
	// from.
	Consumer string `yaml:"consumer"`
	// AckWait is how long JetStream waits for a line's acknowledgement
	// before it gives the line to another chattyd. A chattyd tells
	// JetStream every AckWait/3 that it still works on the lines it
	// holds, so AckWait is what a chattyd that died costs, not a bound on
	// how long a worker may take.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxAckPending is the most lines handed out by JetStream and not yet
	// acknowledged, all chattyd together.
	MaxAckPending int `yaml:"max_ack_pending"`
}

// Enabled reports whether chattyd uses NATS.
func (n NATS) Enabled() bool { return len(n.URLs) > 0 || n.Embedded.Enabled }

// NATSTLS is the TLS of the connection to NATS.
type NATSTLS struct {
	// CAFile verifies the servers' certificates; empty uses the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate, for servers that
	// ask for one.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Given reports whether any TLS setting is set.
func (t NATSTLS) Given() bool { return t != NATSTLS{} }

// NATSStream is the stream of the shared feed.
type NATSStream struct {
	// Name is the stream's name.
	Name string `yaml:"name"`
	// Subjects are the stream's subjects; the feed is published on the
	// first.
	Subjects []string `yaml:"subjects"`
	// Create creates the stream, or updates its limits, at start.
	Create bool `yaml:"create"`
	// Replicas is how many servers keep the stream (1 to 5).
	Replicas int `yaml:"replicas"`
	// Storage is file or memory.
	Storage Storage `yaml:"storage"`
	// MaxMsgs, MaxBytes and MaxAge limit what the stream keeps; 0 is no
	// limit.
	MaxMsgs  int64         `yaml:"max_msgs"`
	MaxBytes int64         `yaml:"max_bytes"`
	MaxAge   time.Duration `yaml:"max_age"`
	// DuplicateWindow is how long the stream remembers message ids, so
	// that a publish retried within it is stored once.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
}

// NATSPublish configures the publisher.
type NATSPublish struct {
	// Window is the most batches published to the work-queue stream
	// and not yet acknowledged. The shared feed's publisher has one batch
	// in flight at a time, which its numbering needs (docs/scale-out.md),
	// and puts what comes meanwhile in the next.
	Window int `yaml:"window"`
	// AckTimeout is how long a publish waits for its acknowledgement
	// before it is retried.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// BufferBytes is how many bytes of feed lines are held while NATS
	// cannot take them; beyond it the feed is not read.
	BufferBytes int `yaml:"buffer_bytes"`
	// BatchLines and BatchBytes bound one message of the stream.
	BatchLines int `yaml:"batch_lines"`
	BatchBytes int `yaml:"batch_bytes"`
}

// NATSConsume configures the edge: how the stream is read back.
type NATSConsume struct {
	// Heartbeat is the consumer's idle heartbeat; two missed ones
	// recreate the consumer.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Start is where a new edge starts: new, first, or a stream
	// sequence number.
	Start StartAt `yaml:"start"`
}

// NATSEmbedded runs nats-server inside chattyd.
type NATSEmbedded struct {
	// Enabled runs the embedded server.
	Enabled bool `yaml:"enabled"`
	// Listen is the client port's host:port.
	Listen string `yaml:"listen"`
	// ServerName names this server in its cluster; empty uses the host
	// name.
	ServerName string `yaml:"server_name"`
	// StoreDir is JetStream's store; empty is "nats" in the state
	// directory.
	StoreDir string `yaml:"store_dir"`
	// ClusterName, ClusterListen and Routes join other servers: the
	// cluster's name, this server's route port and the others' routes
	// (nats://host:port).
	ClusterName   string   `yaml:"cluster_name"`
	ClusterListen string   `yaml:"cluster_listen"`
	Routes        []string `yaml:"routes"`
}

// StoreDirOrDefault returns StoreDir, or "nats" in StateDir().
func (e NATSEmbedded) StoreDirOrDefault() string {
	if e.StoreDir != "" {
		return e.StoreDir
	}
	return filepath.Join(StateDir(), "nats")
}

// Storage is nats.stream.storage: file or memory.
type Storage uint8

// The values of nats.stream.storage.
const (
	StorageFile Storage = iota + 1
	StorageMemory
)

var storages = choices[Storage]{{"file", StorageFile}, {"memory", StorageMemory}}

func (s Storage) String() string                    { return storages.name(s) }
func (s Storage) MarshalYAML() (any, error)         { return storages.marshal(s) }
func (s *Storage) UnmarshalYAML(n *yaml.Node) error { return storages.unmarshal(n, s) }

// StartAt is nats.consume.start: StartNew, StartFirst, or a stream
// sequence number (1 or more). Zero is not valid.
type StartAt int64

// The named values of nats.consume.start.
const (
	StartNew   StartAt = -1
	StartFirst StartAt = -2
)

// Seq returns the stream sequence of a numbered start, 0 for new and first.
func (s StartAt) Seq() uint64 {
	if s > 0 {
		return uint64(s)
	}
	return 0
}

func (s StartAt) String() string {
	switch {
	case s == StartNew:
		return "new"
	case s == StartFirst:
		return "first"
	case s > 0:
		return strconv.FormatInt(int64(s), 10)
	}
	return fmt.Sprintf("StartAt(%d)", int64(s))
}

func (s StartAt) MarshalYAML() (any, error) {
	switch {
	case s == StartNew, s == StartFirst:
		return s.String(), nil
	case s > 0:
		return int64(s), nil
	}
	return nil, fmt.Errorf("config: invalid start %d", int64(s))
}

func (s *StartAt) UnmarshalYAML(n *yaml.Node) error {
	var v string
	if err := n.Decode(&v); err != nil {
		return err
	}
	switch v {
	case "new":
		*s = StartNew
	case "first":
		*s = StartFirst
	default:
		seq, err := strconv.ParseInt(v, 10, 64)
		if err != nil || seq < 1 {
			*s = 0
			return badValue(n, *s, fmt.Sprintf("must be new, first or a stream sequence number (1 or more), got %q", v))
		}
		*s = StartAt(seq)
	}
	return nil
}

// defaultNATS is the nats section's defaults: no NATS.
func defaultNATS() NATS {
	return NATS{
		Stream: NATSStream{
			Name:            "CHATTY",
			Subjects:        []string{"chatty.feed"},
			Create:          true,
			Replicas:        1,
			Storage:         StorageFile,
			DuplicateWindow: 2 * time.Minute,
		},
		Publish: NATSPublish{
			Window:      64,
			AckTimeout:  2 * time.Second,
			BufferBytes: 64 << 20,
			BatchLines:  8192,
			BatchBytes:  1<<20 - 4096,
		},
		Consume: NATSConsume{
			Heartbeat: 2 * time.Second,
			Start:     StartNew,
		},
		WorkQueue: NATSWorkQueue{
			Stream:        "CHATTY_WORK",
			Subject:       "chatty.work",
			Consumer:      "chatty-workers",
			AckWait:       10 * time.Second,
			MaxAckPending: 16384,
		},
		Embedded: NATSEmbedded{
			Listen: "127.0.0.1:4222",
		},
	}
}

// validateNATS checks the nats section.
func (c *Config) validateNATS(bad func(field, format string, args ...any)) {
	n := &c.NATS
	for i, u := range n.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "nats" && p.Scheme != "tls") || p.Host == "" {
			bad("nats.urls", "element %d: %q is not a NATS URL (for example nats://127.0.0.1:4222)", i, u)
		}
	}
	if n.Enabled() && c.Broadcast.Delivery == DeliveryOne {
		c.validateNATSWorkQueue(bad)
	}
	if n.CredentialsFile != "" && n.NKeyFile != "" {
		bad("nats.nkey_file", "excludes nats.credentials_file (which holds its own NKey); choose one")
	}
	if t := n.TLS; (t.CertFile == "") != (t.KeyFile == "") {
		bad("nats.tls.cert_file", "cert_file and key_file go together; set both or neither")
	}
	s := &n.Stream
	if s.Name == "" || strings.ContainsAny(s.Name, " \t.*>/\\") {
		bad("nats.stream.name", "%q is not a stream name: it must be non-empty without spaces, '.', '*', '>', '/' or '\\'", s.Name)
	}
	if len(s.Subjects) == 0 {
		bad("nats.stream.subjects", "needs at least one subject; the feed is published on the first")
	}
	for i, subj := range s.Subjects {
		if subj == "" || strings.ContainsAny(subj, " \t") || strings.HasPrefix(subj, ".") || strings.HasSuffix(subj, ".") || strings.Contains(subj, "..") {
			bad("nats.stream.subjects", "element %d: %q is not a NATS subject (for example chatty.feed)", i, subj)
		} else if i == 0 && strings.ContainsAny(subj, "*>") {
			bad("nats.stream.subjects", "the first subject, which the feed is published on, must have no wildcard; got %q", subj)
		}
	}
	if s.Replicas < 1 || s.Replicas > 5 {
		bad("nats.stream.replicas", "must be from 1 to 5, got %d", s.Replicas)
	}
	if !storages.valid(s.Storage) {
		bad("nats.stream.storage", "must be %s", storages)
	}
	if s.MaxMsgs < 0 {
		bad("nats.stream.max_msgs", "must not be negative (0 is no limit), got %d", s.MaxMsgs)
	}
	if s.MaxBytes < 0 {
		bad("nats.stream.max_bytes", "must not be negative (0 is no limit), got %d", s.MaxBytes)
	}
	if s.MaxAge < 0 {
		bad("nats.stream.max_age", "must not be negative (0s is no limit), got %s", s.MaxAge)
	}
	if s.DuplicateWindow < time.Second {
		bad("nats.stream.duplicate_window", "must be at least 1s, as retried publishes are recognised within it; got %s", s.DuplicateWindow)
	} else if s.MaxAge > 0 && s.DuplicateWindow > s.MaxAge {
		bad("nats.stream.duplicate_window", "must not exceed nats.stream.max_age (%s), got %s", s.MaxAge, s.DuplicateWindow)
	}
	p := &n.Publish
	if p.Window < 1 || p.Window > 4096 {
		bad("nats.publish.window", "must be from 1 to 4096 batches, got %d", p.Window)
	}
	if p.AckTimeout < 100*time.Millisecond {
		bad("nats.publish.ack_timeout", "must be at least 100ms, got %s", p.AckTimeout)
	} else if s.DuplicateWindow >= time.Second && p.AckTimeout*4 > s.DuplicateWindow {
		bad("nats.publish.ack_timeout", "must be at most a quarter of nats.stream.duplicate_window (%s), so that a retry is still recognised; got %s", s.DuplicateWindow, p.AckTimeout)
	}
	if p.BatchLines < 1 {
		bad("nats.publish.batch_lines", "must be positive, got %d", p.BatchLines)
	}
	const maxPayload = 1 << 20 // nats-server's default max_payload
	if p.BatchBytes < 1 || p.BatchBytes > maxPayload-4096 {
		bad("nats.publish.batch_bytes", "must be from 1 to %d (below NATS's 1 MiB message limit), got %d", maxPayload-4096, p.BatchBytes)
	}
	if c.Feed.MaxLineBytes+1 > maxPayload-4096 && n.Enabled() {
		bad("feed.max_line_bytes", "must be below %d with nats, as one line must fit one NATS message; got %d", maxPayload-4096, c.Feed.MaxLineBytes)
	}
	if p.BufferBytes < c.Feed.MaxLineBytes+1 && n.Enabled() {
		bad("nats.publish.buffer_bytes", "must hold at least one line of feed.max_line_bytes (%d), got %d", c.Feed.MaxLineBytes, p.BufferBytes)
	}
	// nats.go takes pull heartbeats from 500 ms to 30 s.
	if n.Consume.Heartbeat < 500*time.Millisecond || n.Consume.Heartbeat > 30*time.Second {
		bad("nats.consume.heartbeat", "must be from 500ms to 30s, got %s", n.Consume.Heartbeat)
	}
	if st := n.Consume.Start; st != StartNew && st != StartFirst && st < 1 {
		bad("nats.consume.start", "must be new, first or a stream sequence number (1 or more)")
	}
	e := &n.Embedded
	hostPort := func(field, v, example string) bool {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			bad(field, "%q is not a host:port address (for example %s)", v, example)
			return false
		}
		return true
	}
	if e.Enabled {
		hostPort("nats.embedded.listen", e.Listen, "127.0.0.1:4222")
		if e.ClusterListen != "" {
			hostPort("nats.embedded.cluster_listen", e.ClusterListen, "0.0.0.0:6222")
			if e.ClusterName == "" {
				bad("nats.embedded.cluster_name", "required with nats.embedded.cluster_listen; every server of the cluster names it alike")
			}
		} else if len(e.Routes) > 0 || e.ClusterName != "" {
			bad("nats.embedded.cluster_listen", "required with nats.embedded.routes or cluster_name; set this server's route host:port")
		}
		for i, r := range e.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Scheme != "nats" || u.Host == "" {
				bad("nats.embedded.routes", "element %d: %q is not a route URL (for example nats://10.0.0.2:6222)", i, r)
			}
		}
		if s.Replicas > 1 && e.ClusterListen == "" && len(n.URLs) == 0 {
			bad("nats.stream.replicas", "%d replicas need a cluster; set nats.embedded.cluster_listen and routes, or replicas: 1", s.Replicas)
		}
	} else if e.ClusterListen != "" || len(e.Routes) > 0 || e.StoreDir != "" || e.ServerName != "" || e.ClusterName != "" {
		bad("nats.embedded.enabled", "must be true when embedded server settings are given")
	}
}

// validateNATSWorkQueue checks the work queue across machines: its
// stream, subject and consumer, and that nothing else needs the feed to
// be broadcast, as with nats the lines go to the work-queue stream only.
func (c *Config) validateNATSWorkQueue(bad func(field, format string, args ...any)) {
	w := &c.NATS.WorkQueue
	b := &c.Broadcast
	if w.Stream == "" || strings.ContainsAny(w.Stream, " \t.*>/\\") {
		bad("nats.work_queue.stream", "%q is not a stream name: it must be non-empty without spaces, '.', '*', '>', '/' or '\\'", w.Stream)
	} else if w.Stream == c.NATS.Stream.Name {
		bad("nats.work_queue.stream", "must differ from nats.stream.name (%s): the work queue is a stream of its own", w.Stream)
	}
	if w.Subject == "" || strings.ContainsAny(w.Subject, " \t*>") || strings.HasPrefix(w.Subject, ".") || strings.HasSuffix(w.Subject, ".") || strings.Contains(w.Subject, "..") {
		bad("nats.work_queue.subject", "%q is not a NATS subject without wildcards (for example chatty.work)", w.Subject)
	} else {
		for _, s := range c.NATS.Stream.Subjects {
			if subjectMatches(s, w.Subject) {
				bad("nats.work_queue.subject", "%q is also a subject of nats.stream.subjects (%s); NATS gives a subject to one stream only, so choose another", w.Subject, s)
				break
			}
		}
	}
	if w.Consumer == "" || strings.ContainsAny(w.Consumer, " \t.*>/\\") {
		bad("nats.work_queue.consumer", "%q is not a consumer name: it must be non-empty without spaces, '.', '*', '>', '/' or '\\'", w.Consumer)
	}
	if w.AckWait < time.Second || w.AckWait > time.Hour {
		bad("nats.work_queue.ack_wait", "must be from 1s to 1h, got %s", w.AckWait)
	}
	if w.MaxAckPending < b.WorkQueue.MaxInFlight || w.MaxAckPending > 1<<20 {
		bad("nats.work_queue.max_ack_pending", "must be from broadcast.work_queue.max_in_flight (%d) to %d lines, got %d", b.WorkQueue.MaxInFlight, 1<<20, w.MaxAckPending)
	}
	// With nats the feed goes to the work-queue stream, not to the
	// broadcast stream: a broadcasting listener would get nothing.
	for _, l := range []struct{ field, addr string }{
		{"broadcast.sequenced.listen", b.Sequenced.Listen},
		{"broadcast.signed.listen", b.Signed.Listen},
		{"broadcast.websocket.listen", b.WebSocket.Listen},
	} {
		if l.addr != "" {
			bad(l.field, "with nats and broadcast.delivery: one every line goes to the work-queue stream, one worker each, so no listener broadcasts; remove %s or set broadcast.delivery: all", l.field)
		}
	}
}

// subjectMatches reports whether the subject pattern matches subject
// (NATS wildcards: "*" one token, ">" the rest).
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, t := range p {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || (t != "*" && t != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}
