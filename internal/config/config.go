// Package config defines chattyd's configuration, its defaults and the strict
// YAML decoding that reports every invalid field with its line.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chatty-dev/chatty/internal/pool/poolsize"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// DefaultYAML is the configuration chattyd uses when no file is given.
//
//go:embed default.yaml
var DefaultYAML []byte

// DemoYAML is the configuration of chattyd --demo: a few short-lived
// workers, so that a newcomer sees the whole life cycle quickly.
//
//go:embed demo.yaml
var DemoYAML []byte

// Version is the only configuration format version this build understands.
const Version = 1

// Config is chattyd's whole configuration.
type Config struct {
	Version   int       `yaml:"version"`
	Broadcast Broadcast `yaml:"broadcast"`
	Feed      Feed      `yaml:"feed"`
	Pool      Pool      `yaml:"pool"`
	Control   Control   `yaml:"control"`
	Metrics   Metrics   `yaml:"metrics"`
	Identity  Identity  `yaml:"identity"`
	Log       Log       `yaml:"log"`
	NATS      NATS      `yaml:"nats"`
}

// Broadcast configures the TCP listener that fans feed lines out to clients.
type Broadcast struct {
	// Listen is the TCP address of the broadcaster, host:port.
	Listen string `yaml:"listen"`
	// MaxClients is the most clients connected at once; 0 means no limit.
	MaxClients int `yaml:"max_clients"`
	// IdleTimeout closes a client that has sent a keep-alive (KEEP_ALIVE,
	// or PING on the signed listener) at least once and then nothing for
	// this long; 0 disables. A client that never sent one (nc watching
	// the feed) is not closed for idleness: TCPKeepAlive and the queue
	// limits close it when its peer is gone.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// TCPKeepAlive is the TCP keep-alive of every listener's accepted
	// connections.
	TCPKeepAlive TCPKeepAlive `yaml:"tcp_keepalive"`
	// MaxClientLine is the longest line a client may send, in bytes.
	MaxClientLine int `yaml:"max_client_line"`
	// MaxUnknownLines is how many lines that are neither ACK_RECEIVED nor
	// KEEP_ALIVE a client may send before it is disconnected; 0 means no
	// limit (they are counted and ignored).
	MaxUnknownLines int `yaml:"max_unknown_lines"`
	// QueueBytes is how far, in bytes, a client may fall behind the feed
	// before it is disconnected as a slow consumer.
	QueueBytes int `yaml:"queue_bytes"`
	// QueueLines is how far, in lines, a client may fall behind the feed.
	QueueLines int `yaml:"queue_lines"`
	// DrainTimeout bounds how long shutdown waits for queued lines to
	// flush, or, with Delivery one, for workers to acknowledge the lines
	// they hold.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Delivery is all (every client of the text listener gets every line)
	// or one (a work queue: each line goes to one worker, and to another
	// when its worker is lost). With one, QueueBytes and QueueLines bound
	// the lines the queue holds, waiting and in flight; beyond them the
	// feed is not read.
	Delivery Delivery `yaml:"delivery"`
	// WorkQueue configures delivery: one.
	WorkQueue WorkQueue `yaml:"work_queue"`
	// TLS configures an optional second listener that speaks the same
	// protocol over TLS 1.3.
	TLS TLS `yaml:"tls"`
	// Signed configures an optional listener of the signed protocol
	// (docs/protocol.md), which needs an identity.
	Signed Signed `yaml:"signed"`
	// Sequenced configures an optional listener of the sequenced line
	// protocol, whose clients resume from a sequence number.
	Sequenced Sequenced `yaml:"sequenced"`
	// Retain bounds the part of the feed each listener keeps for clients
	// that resume and for pool slots whose next worker carries on.
	Retain Retain `yaml:"retain"`
	// WebSocket configures an optional listener of WebSocket clients,
	// which also serves the web page (docs/protocol.md, "WebSocket").
	WebSocket WebSocket `yaml:"websocket"`
}

// WebSocket configures the WebSocket listener: GET /v1/feed upgrades to a
// WebSocket of feed lines, GET / is the web page, GET /v1/status the
// daemon's status. The queue limits, max_clients and idle_timeout of
// broadcast apply to its clients as to the others.
type WebSocket struct {
	// Listen is the listener's host:port; empty runs none.
	Listen string `yaml:"listen"`
	// AllowedOrigins are the origins ("https://example.com:8443") whose
	// pages may open the feed and read the status besides the
	// listener's own; "*" allows any. Empty: same origin only.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// PingInterval is how often every client is pinged; a client that
	// then sends nothing for broadcast.idle_timeout is closed.
	PingInterval time.Duration `yaml:"ping_interval"`
	// TokenFile, when set, names a file (mode 0600 or tighter) whose one
	// line is the bearer token that /v1/feed and /v1/status require.
	TokenFile string `yaml:"token_file"`
	// Auth is none or authorized_keys: a client of /v1/feed must then
	// answer a challenge signed with the identity with the signature of
	// a key of identity.authorized_keys before it is sent anything.
	Auth Auth `yaml:"auth"`
	// MaxUnauthenticated is, with Auth "authorized_keys", the most
	// connections at once that have yet to authenticate; a new one over
	// it is closed at once. 0 means no limit of their own. It changes on
	// reload.
	MaxUnauthenticated int `yaml:"max_unauthenticated"`
	// TLS serves HTTPS and wss:// with TLS 1.3.
	TLS SignedTLS `yaml:"tls"`
}

// Sequenced configures the sequenced listener (docs/protocol.md, "The
// sequenced listener").
type Sequenced struct {
	// Listen is its host:port; empty runs none.
	Listen string `yaml:"listen"`
}

// Retain bounds what each listener keeps of the most recent feed, by
// whichever limit is hit first; whole chunks of 256 KiB are released.
type Retain struct {
	// Bytes is the most bytes kept; 0 turns retention off.
	Bytes int64 `yaml:"bytes"`
	// Lines is the most lines kept; 0 means no limit by lines.
	Lines int64 `yaml:"lines"`
	// Age releases lines older than this; 0 means no limit by age.
	Age time.Duration `yaml:"age"`
}

// WorkQueue configures the work queue of broadcast.delivery: one.
type WorkQueue struct {
	// MaxInFlight is the most unacknowledged lines one worker holds.
	MaxInFlight int `yaml:"max_in_flight"`
	// AckTimeout is how long a worker may hold a line unacknowledged;
	// then it is disconnected and its lines go to other workers.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// MaxDeliveries is how many deliveries without an ack make a line a
	// poison line, set aside in the dead-letter list.
	MaxDeliveries int `yaml:"max_deliveries"`
	// DeadLetters is how many poison lines the dead-letter list keeps;
	// the oldest is dropped (logged and counted) for a new one beyond.
	DeadLetters int `yaml:"dead_letters"`
}

// TCPKeepAlive is the TCP keep-alive of accepted connections: the first
// probe after Idle without traffic, then one every Interval; Count probes
// unanswered fail the connection. TCP_USER_TIMEOUT is set to
// Idle + Interval*Count, so unacknowledged data is bounded alike. It
// changes on reload, for connections accepted afterwards.
type TCPKeepAlive struct {
	Idle     time.Duration `yaml:"idle"`
	Interval time.Duration `yaml:"interval"`
	Count    int           `yaml:"count"`
}

// Signed configures the broadcaster's signed listener.
type Signed struct {
	// Listen is the signed listener's host:port; empty runs none.
	Listen string `yaml:"listen"`
	// Mode is chained or per-message.
	Mode SignMode `yaml:"mode"`
	// CheckpointEvery and CheckpointInterval space the checkpoints of the
	// chained mode.
	CheckpointEvery    int           `yaml:"checkpoint_every"`
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// TimestampWindow is how far the time of a client's signed message
	// may be from the daemon's clock.
	TimestampWindow time.Duration `yaml:"timestamp_window"`
	// FeedType is the message type of every feed line on the signed
	// listener, one of the seven types of package message.
	FeedType MessageType `yaml:"feed_type"`
	// Auth is none or authorized_keys: a client must then prove it
	// holds a key of identity.authorized_keys (or a pool worker's key)
	// before it receives anything.
	Auth Auth `yaml:"auth"`
	// MaxUnauthenticated is, with Auth "authorized_keys", the most
	// connections at once that have yet to authenticate; a new one over
	// it is closed at once. 0 means no limit of their own (max_clients
	// still applies). It changes on reload.
	MaxUnauthenticated int `yaml:"max_unauthenticated"`
	// UpstreamRate and UpstreamBurst limit the signed messages one client
	// may send: UpstreamRate per second on average, UpstreamBurst at once.
	UpstreamRate  float64 `yaml:"upstream_rate"`
	UpstreamBurst int     `yaml:"upstream_burst"`
	// TLS runs the signed listener over TLS 1.3.
	TLS SignedTLS `yaml:"tls"`
}

// SignedTLS configures TLS on the signed listener, or on the WebSocket
// listener.
type SignedTLS struct {
	// Enabled runs the signed listener over TLS.
	Enabled  bool `yaml:"enabled"`
	TLSFiles `yaml:",inline"`
}

// TLS configures the broadcaster's TLS listener.
type TLS struct {
	// Listen is the TLS listener's host:port; empty runs none.
	Listen   string `yaml:"listen"`
	TLSFiles `yaml:",inline"`
}

// TLSFiles says where a TLS listener's certificate comes from, and whom
// it asks for one: the keys both TLS sections share.
type TLSFiles struct {
	// CertFile and KeyFile are the server's certificate chain and key
	// (PEM), unless SelfSigned.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// SelfSigned serves a certificate derived from the daemon's identity,
	// which clients verify by pinning the identity's public key.
	SelfSigned bool `yaml:"self_signed"`
	// ClientCAFile, when set, requires clients to present a certificate
	// signed by one of these CAs (PEM): mutual TLS.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Given reports whether any of the settings is set.
func (f TLSFiles) Given() bool { return f != TLSFiles{} }

// Feed configures where lines come from.
type Feed struct {
	// Source is stdin or fifo.
	Source Source `yaml:"source"`
	// Path is the FIFO's path when Source is fifo.
	Path string `yaml:"path"`
	// MaxLineBytes is the longest accepted feed line; longer ones are dropped.
	MaxLineBytes int `yaml:"max_line_bytes"`
	// OnEOF is keep (run on when the feed ends) or stop (shut down).
	OnEOF OnEOF `yaml:"on_eof"`
}

// Pool configures the supervised worker processes.
type Pool struct {
	// Size is the number of worker slots; 0 runs no workers.
	Size int `yaml:"size"`
	// Command runs a custom worker instead of the built-in one. Placeholders
	// {host}, {port}, {addr} and {slot} are replaced in every argument.
	Command []string `yaml:"command"`
	// MinUptime is how long a worker must live to count as a stable run.
	MinUptime time.Duration `yaml:"min_uptime"`
	// BackoffInitial is the first respawn delay after a short-lived worker.
	BackoffInitial time.Duration `yaml:"backoff_initial"`
	// BackoffMax caps the respawn delay.
	BackoffMax time.Duration `yaml:"backoff_max"`
	// StopTimeout is how long a worker has between SIGTERM and SIGKILL.
	StopTimeout time.Duration `yaml:"stop_timeout"`
	// Replay is unacked (a slot's next worker starts after the last line
	// its previous worker acknowledged, from retention) or none (it
	// starts live, as the original did).
	Replay Replay `yaml:"replay"`
	// Worker configures the built-in worker.
	Worker Worker `yaml:"worker"`
}

// Worker configures the built-in worker (chattyd worker).
type Worker struct {
	LifetimeMin      time.Duration `yaml:"lifetime_min"`
	LifetimeMax      time.Duration `yaml:"lifetime_max"`
	KeepAliveMin     time.Duration `yaml:"keepalive_min"`
	KeepAliveMax     time.Duration `yaml:"keepalive_max"`
	KeepAliveTimeout time.Duration `yaml:"keepalive_timeout"`
	// Protocol is text (the broadcast listener) or signed (the signed
	// listener, verifying with the daemon's public key).
	Protocol Protocol `yaml:"protocol"`
}

// Control configures the Unix control socket.
type Control struct {
	// Socket is the socket's path; empty means the default for the user.
	Socket string `yaml:"socket"`
	// Group names a group whose members may change things through the socket.
	Group string `yaml:"group"`
}

// Metrics configures the Prometheus endpoint on TCP. The control socket
// serves the same metrics at /metrics whatever this says.
type Metrics struct {
	// Listen is the host:port of a read-only HTTP listener that serves
	// GET /metrics, for Prometheus to scrape; empty runs none. It changes
	// only at restart.
	Listen string `yaml:"listen"`
}

// Identity configures the daemon's Ed25519 identity, the key that signs
// what the signed listener sends.
type Identity struct {
	// KeyFile is the private key's path (PKCS#8 PEM, mode 0600); its public
	// key is KeyFile + ".pub". Empty means DefaultKeyFile().
	KeyFile string `yaml:"key_file"`
	// Generate makes a new key at start when KeyFile does not exist yet.
	Generate bool `yaml:"generate"`
	// AuthorizedKeys is an authorized_keys file of the client keys whose
	// signed messages the signed listener accepts; empty accepts none.
	AuthorizedKeys string `yaml:"authorized_keys"`
}

// Enabled reports whether the daemon has an identity: a key file is named
// or one may be generated. AuthorizedKeys alone does not make one.
func (i Identity) Enabled() bool { return i.KeyFile != "" || i.Generate }

// Path returns the private key's path: KeyFile, or DefaultKeyFile().
func (i Identity) Path() string {
	if i.KeyFile != "" {
		return i.KeyFile
	}
	return DefaultKeyFile()
}

// StateDir returns chattyd's state directory: $STATE_DIRECTORY (set by
// systemd's StateDirectory=; the first one if it lists several), else
// /var/lib/chattyd as root, else $XDG_STATE_HOME/chattyd or
// ~/.local/state/chattyd.
func StateDir() string {
	if dirs := os.Getenv("STATE_DIRECTORY"); dirs != "" {
		first, _, _ := strings.Cut(dirs, ":")
		return first
	}
	if os.Geteuid() == 0 {
		return "/var/lib/chattyd"
	}
	if x := os.Getenv("XDG_STATE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "chattyd")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, ".local", "state", "chattyd")
}

// DefaultKeyFile returns the identity key's default path, identity.key in
// StateDir().
func DefaultKeyFile() string { return filepath.Join(StateDir(), "identity.key") }

// Log configures logging.
type Log struct {
	// Level is one of debug, info, warning, error.
	Level LogLevel `yaml:"level"`
	// Format is text or json.
	Format LogFormat `yaml:"format"`
	// File, when set, receives the log instead of stderr (mode 0640).
	File string `yaml:"file"`
	// SummaryInterval, when not 0, logs one line of counters at info
	// level this often: lines in, clients, workers, restarts, slow
	// consumers and mismatched acks. It changes only at restart.
	SummaryInterval time.Duration `yaml:"summary_interval"`
}

// Default returns the configuration with every default filled in.
func Default() Config {
	return Config{
		Version: Version,
		Broadcast: Broadcast{
			Listen:        "127.0.0.1:54321",
			MaxClients:    10000,
			IdleTimeout:   60 * time.Second,
			TCPKeepAlive:  TCPKeepAlive{Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3},
			MaxClientLine: 4096,
			QueueBytes:    16 << 20,
			QueueLines:    1 << 18,
			DrainTimeout:  5 * time.Second,
			Delivery:      DeliveryAll,
			WorkQueue:     WorkQueue{MaxInFlight: 64, AckTimeout: 30 * time.Second, MaxDeliveries: 5, DeadLetters: 1000},
			Retain:        Retain{Bytes: 64 << 20},
			Signed: Signed{
				Mode:               SignChained,
				CheckpointEvery:    signed.DefaultCheckpointEvery,
				CheckpointInterval: signed.DefaultCheckpointInterval,
				TimestampWindow:    signed.DefaultTimestampWindow,
				FeedType:           MessageType(message.Info),
				Auth:               AuthNone,
				MaxUnauthenticated: 1024,
				UpstreamRate:       20,
				UpstreamBurst:      40,
			},
			WebSocket: WebSocket{AllowedOrigins: []string{}, PingInterval: 20 * time.Second, Auth: AuthNone, MaxUnauthenticated: 1024},
		},
		Feed: Feed{
			Source:       SourceStdin,
			MaxLineBytes: 64 << 10,
			OnEOF:        OnEOFKeep,
		},
		Pool: Pool{
			Size:           16,
			MinUptime:      time.Second,
			BackoffInitial: 100 * time.Millisecond,
			BackoffMax:     30 * time.Second,
			StopTimeout:    10 * time.Second,
			Replay:         ReplayUnacked,
			Worker: Worker{
				LifetimeMin:      60 * time.Second,
				LifetimeMax:      119 * time.Second,
				KeepAliveMin:     5 * time.Second,
				KeepAliveMax:     19 * time.Second,
				KeepAliveTimeout: 10 * time.Second,
				Protocol:         ProtocolText,
			},
		},
		Log:  Log{Level: LevelInfo, Format: FormatText},
		NATS: defaultNATS(),
	}
}

// Problem is one invalid field.
type Problem struct {
	Line  int    // 1-based line in the file, 0 when unknown
	Field string // dotted path such as broadcast.listen, empty when unknown
	Msg   string
}

func (p Problem) String() string {
	s := ""
	if p.Line > 0 {
		s = fmt.Sprintf("line %d: ", p.Line)
	}
	if p.Field != "" {
		s += p.Field + ": "
	}
	return s + p.Msg
}

// Error reports every problem found in one configuration file.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	s := fmt.Sprintf("invalid configuration %s:", e.File)
	if len(e.Problems) == 1 {
		return s + " " + e.Problems[0].String()
	}
	for _, p := range e.Problems {
		s += "\n  " + p.String()
	}
	return s
}

// ErrNoFile is returned by Load when the named file does not exist.
var ErrNoFile = errors.New("configuration file not found")

// Load reads and validates the file at path. An empty path loads the
// embedded default configuration.
func Load(path string) (Config, error) {
	if path == "" {
		return Parse("(built-in default)", DefaultYAML)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf("%w: %s", ErrNoFile, path)
	}
	if err != nil {
		return Config{}, fmt.Errorf("read configuration: %w", err)
	}
	return Parse(path, data)
}

// Validate checks values that decoding alone cannot. It returns every
// problem, with the dotted field path of each; lines are added by Parse.
func (c *Config) Validate() []Problem {
	var ps []Problem
	bad := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Version != Version {
		if c.Version == 0 {
			bad("version", "missing; add \"version: %d\" at the top of the file", Version)
		} else {
			bad("version", "unsupported version %d; this chattyd understands version %d", c.Version, Version)
		}
	}
	b := &c.Broadcast
	if _, port, err := net.SplitHostPort(b.Listen); err != nil || port == "" {
		bad("broadcast.listen", "%q is not a host:port address (for example 127.0.0.1:54321)", b.Listen)
	}
	nonNegative := func(field string, v int) {
		if v < 0 {
			bad(field, "must not be negative, got %d", v)
		}
	}
	positive := func(field string, v int) {
		if v <= 0 {
			bad(field, "must be positive, got %d", v)
		}
	}
	nonNegativeDur := func(field string, d time.Duration) {
		if d < 0 {
			bad(field, "must not be negative, got %s", d)
		}
	}
	positiveDur := func(field string, d time.Duration) {
		if d <= 0 {
			bad(field, "must be positive, got %s", d)
		}
	}
	nonNegative("broadcast.max_clients", b.MaxClients)
	nonNegativeDur("broadcast.idle_timeout", b.IdleTimeout)
	nonNegative("broadcast.max_unknown_lines", b.MaxUnknownLines)
	// The kernel counts keep-alive times in whole seconds, up to 32767,
	// and probes up to 127.
	keepAliveDur := func(field string, d time.Duration) {
		if d < time.Second || d > 32767*time.Second || d%time.Second != 0 {
			bad(field, "must be a whole number of seconds from 1s to 32767s, got %s", d)
		}
	}
	keepAliveDur("broadcast.tcp_keepalive.idle", b.TCPKeepAlive.Idle)
	keepAliveDur("broadcast.tcp_keepalive.interval", b.TCPKeepAlive.Interval)
	if n := b.TCPKeepAlive.Count; n < 1 || n > 127 {
		bad("broadcast.tcp_keepalive.count", "must be from 1 to 127 probes, got %d", n)
	}
	if b.MaxClientLine < 64 {
		bad("broadcast.max_client_line", "must be at least 64 bytes, got %d", b.MaxClientLine)
	}
	positive("broadcast.queue_bytes", b.QueueBytes)
	positive("broadcast.queue_lines", b.QueueLines)
	nonNegativeDur("broadcast.drain_timeout", b.DrainTimeout)
	if !deliveries.valid(b.Delivery) {
		bad("broadcast.delivery", "must be %s", deliveries)
	}
	wq := b.WorkQueue
	if wq.MaxInFlight < 1 || wq.MaxInFlight > 1<<16 {
		bad("broadcast.work_queue.max_in_flight", "must be from 1 to %d lines, got %d", 1<<16, wq.MaxInFlight)
	}
	positiveDur("broadcast.work_queue.ack_timeout", wq.AckTimeout)
	if wq.MaxDeliveries < 1 || wq.MaxDeliveries > 1000 {
		bad("broadcast.work_queue.max_deliveries", "must be from 1 to 1000, got %d", wq.MaxDeliveries)
	}
	if wq.DeadLetters < 0 || wq.DeadLetters > 1<<20 {
		bad("broadcast.work_queue.dead_letters", "must be from 0 to %d lines, got %d", 1<<20, wq.DeadLetters)
	}
	if b.Delivery == DeliveryOne && b.TLS.Listen != "" {
		bad("broadcast.tls.listen", "the work queue (broadcast.delivery: one) serves the plain TCP listener only; remove broadcast.tls or set broadcast.delivery: all")
	}
	if t := b.TLS; t.Listen != "" {
		if _, port, err := net.SplitHostPort(t.Listen); err != nil || port == "" {
			bad("broadcast.tls.listen", "%q is not a host:port address (for example 0.0.0.0:54322)", t.Listen)
		}
		checkTLSSource(bad, "broadcast.tls", t.TLSFiles, c.Identity.Enabled())
	} else if t.Given() {
		bad("broadcast.tls.listen", "required when TLS settings are given; set the TLS listener's host:port")
	}

	distinctListeners(bad, c.listenAddrs())
	sg := &b.Signed
	if sg.Listen != "" {
		if _, port, err := net.SplitHostPort(sg.Listen); err != nil || port == "" {
			bad("broadcast.signed.listen", "%q is not a host:port address (for example 127.0.0.1:54323)", sg.Listen)
		}
		if !c.Identity.Enabled() {
			bad("broadcast.signed.listen", "needs an identity to sign with; set identity.key_file or identity.generate: true")
		}
		if c.Feed.MaxLineBytes > signed.MaxPayload {
			bad("feed.max_line_bytes", "must be at most %d (the signed protocol's largest payload) with broadcast.signed.listen, got %d", signed.MaxPayload, c.Feed.MaxLineBytes)
		}
	}
	if q := b.Sequenced.Listen; q != "" {
		if _, port, err := net.SplitHostPort(q); err != nil || port == "" {
			bad("broadcast.sequenced.listen", "%q is not a host:port address (for example 127.0.0.1:54324)", q)
		}
	}
	if b.Retain.Bytes < 0 {
		bad("broadcast.retain.bytes", "must be 0 (off) or more, got %d", b.Retain.Bytes)
	}
	if b.Retain.Lines < 0 {
		bad("broadcast.retain.lines", "must be 0 (no limit) or more, got %d", b.Retain.Lines)
	}
	nonNegativeDur("broadcast.retain.age", b.Retain.Age)
	if !signModes.valid(sg.Mode) {
		bad("broadcast.signed.mode", "must be %s", signModes)
	}
	positive("broadcast.signed.checkpoint_every", sg.CheckpointEvery)
	positiveDur("broadcast.signed.checkpoint_interval", sg.CheckpointInterval)
	positiveDur("broadcast.signed.timestamp_window", sg.TimestampWindow)
	if !sg.FeedType.Type().Valid() {
		bad("broadcast.signed.feed_type", "must be one of %s", messageTypes())
	}
	if !auths.valid(sg.Auth) {
		bad("broadcast.signed.auth", "must be %s", auths)
	}
	nonNegative("broadcast.signed.max_unauthenticated", sg.MaxUnauthenticated)
	if sg.UpstreamRate <= 0 {
		bad("broadcast.signed.upstream_rate", "must be positive, got %g", sg.UpstreamRate)
	}
	positive("broadcast.signed.upstream_burst", sg.UpstreamBurst)
	if st := sg.TLS; st.Enabled {
		checkTLSSource(bad, "broadcast.signed.tls", st.TLSFiles, c.Identity.Enabled())
	} else if st.Given() {
		bad("broadcast.signed.tls.enabled", "must be true when TLS settings are given")
	}

	ws := &b.WebSocket
	if ws.Listen != "" {
		if _, port, err := net.SplitHostPort(ws.Listen); err != nil || port == "" {
			bad("broadcast.websocket.listen", "%q is not a host:port address (for example 127.0.0.1:8080)", ws.Listen)
		}
	}
	for i, o := range ws.AllowedOrigins {
		if msg := checkOrigin(o); msg != "" {
			bad("broadcast.websocket.allowed_origins", "entry %d, %q, %s", i+1, o, msg)
		}
	}
	positiveDur("broadcast.websocket.ping_interval", ws.PingInterval)
	if ws.Listen != "" && b.IdleTimeout > 0 && ws.PingInterval >= b.IdleTimeout {
		bad("broadcast.websocket.ping_interval", "must be shorter than broadcast.idle_timeout (%s), or clients that answer every ping are closed as idle; got %s", b.IdleTimeout, ws.PingInterval)
	}
	nonNegative("broadcast.websocket.max_unauthenticated", ws.MaxUnauthenticated)
	if ws.Auth == AuthAuthorizedKeys && ws.Listen != "" {
		if !c.Identity.Enabled() {
			bad("broadcast.websocket.auth", "authorized_keys needs an identity to sign the challenge; set identity.key_file or identity.generate: true")
		}
		if c.Identity.AuthorizedKeys == "" {
			bad("broadcast.websocket.auth", "authorized_keys needs identity.authorized_keys, or no client could ever connect")
		}
	}
	if st := ws.TLS; st.Enabled {
		checkTLSSource(bad, "broadcast.websocket.tls", st.TLSFiles, c.Identity.Enabled())
	} else if st.Given() {
		bad("broadcast.websocket.tls.enabled", "must be true when TLS settings are given")
	}

	f := &c.Feed
	switch f.Source {
	case SourceStdin:
	case SourceFIFO:
		if f.Path == "" {
			bad("feed.path", "required when feed.source is fifo")
		}
	default:
		bad("feed.source", "must be %s", sources)
	}
	if f.MaxLineBytes < 1 || f.MaxLineBytes > 64<<20 {
		bad("feed.max_line_bytes", "must be from 1 to %d, got %d", 64<<20, f.MaxLineBytes)
	}
	if b.QueueBytes > 0 && f.MaxLineBytes >= b.QueueBytes {
		bad("broadcast.queue_bytes", "must be larger than feed.max_line_bytes (%d), got %d", f.MaxLineBytes, b.QueueBytes)
	}
	if !onEOFs.valid(f.OnEOF) {
		bad("feed.on_eof", "must be %s", onEOFs)
	}

	p := &c.Pool
	if p.Size < 0 || p.Size > poolsize.Max {
		bad("pool.size", "must be from 0 to %d, got %d", poolsize.Max, p.Size)
	}
	if len(p.Command) > 0 && p.Command[0] == "" {
		bad("pool.command", "the program (first element) must not be empty")
	}
	// Zero would respawn a worker that dies at once without any delay:
	// the fork storm of the original.
	positiveDur("pool.min_uptime", p.MinUptime)
	positiveDur("pool.backoff_initial", p.BackoffInitial)
	if p.BackoffMax < p.BackoffInitial {
		bad("pool.backoff_max", "must be at least pool.backoff_initial (%s), got %s", p.BackoffInitial, p.BackoffMax)
	}
	positiveDur("pool.stop_timeout", p.StopTimeout)
	if !replays.valid(p.Replay) {
		bad("pool.replay", "must be %s", replays)
	}
	w := &p.Worker
	positiveDur("pool.worker.lifetime_min", w.LifetimeMin)
	if w.LifetimeMax < w.LifetimeMin {
		bad("pool.worker.lifetime_max", "must be at least pool.worker.lifetime_min (%s), got %s", w.LifetimeMin, w.LifetimeMax)
	}
	positiveDur("pool.worker.keepalive_min", w.KeepAliveMin)
	if w.KeepAliveMax < w.KeepAliveMin {
		bad("pool.worker.keepalive_max", "must be at least pool.worker.keepalive_min (%s), got %s", w.KeepAliveMin, w.KeepAliveMax)
	}
	positiveDur("pool.worker.keepalive_timeout", w.KeepAliveTimeout)
	switch w.Protocol {
	case ProtocolText:
	case ProtocolSigned:
		if b.Delivery == DeliveryOne && p.Size > 0 {
			bad("pool.worker.protocol", "signed workers connect to the signed listener, which broadcasts; with broadcast.delivery: one the work queue is the text listener, so use protocol: text")
		}
		if b.Signed.Listen == "" {
			bad("pool.worker.protocol", "signed needs the signed listener; set broadcast.signed.listen")
		}
		if st := b.Signed.TLS; st.Enabled && !st.SelfSigned && len(p.Command) == 0 {
			bad("pool.worker.protocol", "signed workers verify the signed listener's TLS by pinning the identity, which needs broadcast.signed.tls.self_signed: true (or run your own workers with pool.command)")
		}
		if b.Signed.TLS.ClientCAFile != "" && len(p.Command) == 0 {
			bad("pool.worker.protocol", "built-in workers have no client certificate for broadcast.signed.tls.client_ca_file; use broadcast.signed.auth: authorized_keys, which gives each worker a key, or pool.command")
		}
	default:
		bad("pool.worker.protocol", "must be %s", protocols)
	}

	if m := c.Metrics.Listen; m != "" {
		if _, port, err := net.SplitHostPort(m); err != nil || port == "" {
			bad("metrics.listen", "%q is not a host:port address (for example 127.0.0.1:9464); leave it empty to serve metrics on the control socket only", m)
		}
	}

	if k := c.Identity.KeyFile; k != "" {
		switch {
		case strings.HasSuffix(k, ".pub"):
			bad("identity.key_file", "%q looks like a public key; name the private key file (without .pub)", k)
		case strings.HasSuffix(k, "/"):
			bad("identity.key_file", "%q is a directory; name the key file, such as %s", k, filepath.Join(k, "identity.key"))
		}
	}
	if sg.Auth == AuthAuthorizedKeys && c.Identity.AuthorizedKeys == "" && (p.Size == 0 || p.Worker.Protocol != ProtocolSigned) {
		bad("broadcast.signed.auth", "authorized_keys needs identity.authorized_keys, or signed pool workers, or no client could ever connect")
	}
	if sg.Auth == AuthAuthorizedKeys && p.Worker.Protocol == ProtocolSigned && sg.MaxUnauthenticated > 0 && p.Size > sg.MaxUnauthenticated {
		bad("broadcast.signed.max_unauthenticated", "must be at least pool.size (%d), as the pool's workers authenticate when they start together; got %d", p.Size, sg.MaxUnauthenticated)
	}
	if c.Identity.AuthorizedKeys != "" && b.Signed.Listen == "" && (b.WebSocket.Listen == "" || b.WebSocket.Auth != AuthAuthorizedKeys) {
		bad("identity.authorized_keys", "only the signed listener, and the WebSocket listener with auth: authorized_keys, use it; set broadcast.signed.listen or broadcast.websocket.auth too")
	}

	if !logLevels.valid(c.Log.Level) {
		bad("log.level", "must be %s", logLevels)
	}
	if !logFormats.valid(c.Log.Format) {
		bad("log.format", "must be %s", logFormats)
	}
	if c.Log.SummaryInterval != 0 && c.Log.SummaryInterval < time.Second {
		bad("log.summary_interval", "must be 0 (off) or at least 1s, got %s", c.Log.SummaryInterval)
	}
	c.validateNATS(bad)
	return ps
}

// checkTLSSource checks where a TLS listener's certificate comes from:
// files, or the identity (self_signed), not both.
func checkTLSSource(bad func(field, format string, args ...any), section string, f TLSFiles, identity bool) {
	switch {
	case f.SelfSigned && (f.CertFile != "" || f.KeyFile != ""):
		bad(section+".self_signed", "excludes cert_file and key_file; choose one source of the certificate")
	case f.SelfSigned && !identity:
		bad(section+".self_signed", "derives the certificate from the identity; set identity.key_file or identity.generate: true")
	case !f.SelfSigned:
		if f.CertFile == "" {
			bad(section+".cert_file", "required unless %s.self_signed is true", section)
		}
		if f.KeyFile == "" {
			bad(section+".key_file", "required unless %s.self_signed is true", section)
		}
	}
}

// checkOrigin returns what is wrong with an allowed origin, or "" when it
// is "*" or scheme://host[:port] with scheme http or https and nothing
// more.
func checkOrigin(o string) string {
	if o == "*" {
		return ""
	}
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return "is not a URL: " + err.Error()
	case u.Scheme != "http" && u.Scheme != "https":
		return "must start with http:// or https:// (an origin such as https://example.com), or be \"*\""
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "must be an origin: scheme://host[:port], no path, query or user (such as https://example.com:8443)"
	}
	return ""
}

// namedAddr is a listener's address with the setting that gives it.
type namedAddr struct{ name, addr string }

// listenAddrs returns the address of every TCP listener configured, in the
// order of the file. A listener added to Config belongs here, so that two
// never share an address.
func (c *Config) listenAddrs() []namedAddr {
	b := &c.Broadcast
	return []namedAddr{
		{"broadcast.listen", b.Listen},
		{"broadcast.tls.listen", b.TLS.Listen},
		{"broadcast.signed.listen", b.Signed.Listen},
		{"broadcast.sequenced.listen", b.Sequenced.Listen},
		{"broadcast.websocket.listen", b.WebSocket.Listen},
		{"metrics.listen", c.Metrics.Listen},
	}
}

// distinctListeners reports every listener whose address an earlier one
// has already; port 0 (any free port) never collides.
func distinctListeners(bad func(field, format string, args ...any), addrs []namedAddr) {
	seen := map[string]string{}
	for _, a := range addrs {
		if a.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "0" {
			continue
		}
		if first, ok := seen[a.addr]; ok {
			bad(a.name, "must differ from %s (both %s)", first, a.addr)
			continue
		}
		seen[a.addr] = a.name
	}
}
