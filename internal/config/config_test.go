package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// exampleFile is the documented configuration, relative to this package.
const exampleFile = "../../configs/chattyd.yaml"

// want describes one Problem a test expects.
type want struct {
	line  int
	field string
	msg   string // a substring of the problem's message
}

// checkProblems asserts that err is an *Error for file whose problems match
// wants one for one, in order.
func checkProblems(t *testing.T, file string, err error, wants []want) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %d problem(s)", len(wants))
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is %T, want *config.Error", err, err)
	}
	if ce.File != file {
		t.Errorf("Error.File = %q, want %q", ce.File, file)
	}
	if !strings.Contains(err.Error(), file) {
		t.Errorf("error text does not name the file %q:\n%v", file, err)
	}
	if len(ce.Problems) != len(wants) {
		t.Fatalf("got %d problem(s), want %d:\n%v", len(ce.Problems), len(wants), err)
	}
	for i, w := range wants {
		p := ce.Problems[i]
		if p.Line != w.line || p.Field != w.field || !strings.Contains(p.Msg, w.msg) {
			t.Errorf("problem %d = {line %d, field %q, %q}, want {line %d, field %q, containing %q}",
				i, p.Line, p.Field, p.Msg, w.line, w.field, w.msg)
		}
		if w.line > 0 && !strings.Contains(p.String(), "line ") {
			t.Errorf("problem %d text %q does not name its line", i, p.String())
		}
		if w.field != "" && !strings.Contains(p.String(), w.field) {
			t.Errorf("problem %d text %q does not name its field", i, p.String())
		}
	}
}

// parseErrorCases are files Parse must reject; FuzzParse uses them as seeds.
var parseErrorCases = []struct {
	name string
	yaml string
	want []want
}{
	// The shape of the file.
	{"empty file", "", []want{{0, "", "empty"}}},
	{"only comments", "# nothing here\n", []want{{0, "", "empty"}}},
	{"missing version", "broadcast:\n  listen: 127.0.0.1:1\n", []want{{0, "version", "missing"}}},
	{"null document", "~\n", []want{{0, "version", "missing"}}},
	{"version 2", "version: 2\n", []want{{1, "version", "unsupported version 2"}}},
	{"version as string", "version: one\n", []want{{1, "version", "whole number"}}},
	{"not a mapping", "hello\n", []want{{1, "", "mapping"}}},
	{"list at top", "- version: 1\n", []want{{1, "", "mapping"}}},
	{"second document", "version: 1\n---\nversion: 1\n", []want{{2, "", "second YAML document"}}},
	{"empty second document", "version: 1\n---\n", []want{{2, "", "second YAML document"}}},
	{"broken second document", "version: 1\n---\n[\n", []want{{3, "", "second YAML document"}}},
	{"syntax error", "version: 1\nbroadcast:\n  listen: a\n   b: c\n", []want{{4, "", "mapping values are not allowed"}}},
	{"unclosed flow", "version: 1\nbroadcast: [\n", []want{{2, "", "did not find expected node content"}}},
	{"parser error line", "version: 1\nfeed:\n  source: stdin\n- b\n", []want{{4, "", "did not find expected key"}}},
	{"unclosed flow list", "version: 1\nbroadcast: [1, 2\nfeed: 3\n", []want{{2, "", "did not find expected ',' or ']'"}}},
	{"tab indentation", "version: 1\n\tbroadcast: x\n", []want{{2, "", "tab"}}},
	{"duplicate key", "version: 1\nversion: 1\n", []want{{2, "version", "already defined at line 1"}}},

	// Strict decoding: unknown keys and wrong types.
	{"unknown top-level key", "version: 1\nbroadcats:\n  listen: a:1\n", []want{{2, "broadcats", `unknown field "broadcats" at the top level`}}},
	{"misspelt nested key", "version: 1\nfeed:\n  source: stdin\nbroadcast:\n  lisen: 127.0.0.1:1\n",
		[]want{{5, "broadcast.lisen", `unknown field "lisen" in broadcast`}}},
	{"misspelt worker key", "version: 1\npool:\n  worker:\n    lifetim_min: 1s\n",
		[]want{{4, "pool.worker.lifetim_min", `unknown field "lifetim_min" in pool.worker`}}},
	{"string for int", "version: 1\nbroadcast:\n  max_clients: lots\n", []want{{3, "broadcast.max_clients", "whole number"}}},
	{"int for duration", "version: 1\nbroadcast:\n  idle_timeout: 60\n", []want{{3, "broadcast.idle_timeout", "60s"}}},
	{"bad duration", "version: 1\npool:\n  stop_timeout: 10 seconds\n", []want{{3, "pool.stop_timeout", "duration"}}},
	{"scalar for section", "version: 1\nlog: debug\n", []want{{2, "log", "mapping"}}},
	{"string for list", "version: 1\npool:\n  command: chatty_server -child {port}\n", []want{{3, "pool.command", `list of strings, such as [chatty_server, -child, "{port}"]; got "chatty_server -child {port}"`}}},
	{"map in list", "version: 1\npool:\n  command: [a, {b: c}]\n", []want{{3, "pool.command", "string"}}},
	{"bad element in block list", "version: 1\npool:\n  command:\n    - a\n    - {b: c}\n", []want{{5, "pool.command", "must be a string"}}},
	{"alias to the wrong section", "version: 1\nbroadcast: &b {max_clients: x}\nfeed: *b\n",
		[]want{{2, "broadcast.max_clients", "whole number"}, {2, "", `unknown field "max_clients" in feed`}}},
	{"flow mapping", "version: 1\nbroadcast: {max_clients: x, queue_lines: y}\n",
		[]want{{2, "broadcast.max_clients", "whole number"}, {2, "broadcast.queue_lines", "whole number"}}},

	// Validate, one rule at a time.
	{"listen without port", "version: 1\nbroadcast:\n  listen: 127.0.0.1\n", []want{{3, "broadcast.listen", "host:port"}}},
	{"bad delivery", "version: 1\nbroadcast:\n  delivery: some\n", []want{{3, "broadcast.delivery", `must be all or one, got "some"`}}},
	{"zero window", "version: 1\nbroadcast:\n  work_queue:\n    max_in_flight: 0\n", []want{{4, "broadcast.work_queue.max_in_flight", "from 1 to 65536"}}},
	{"zero ack timeout", "version: 1\nbroadcast:\n  work_queue:\n    ack_timeout: 0s\n", []want{{4, "broadcast.work_queue.ack_timeout", "positive"}}},
	{"zero deliveries", "version: 1\nbroadcast:\n  work_queue:\n    max_deliveries: 0\n", []want{{4, "broadcast.work_queue.max_deliveries", "from 1 to 1000"}}},
	{"negative dead letters", "version: 1\nbroadcast:\n  work_queue:\n    dead_letters: -1\n", []want{{4, "broadcast.work_queue.dead_letters", "from 0"}}},
	{"work queue with TLS", "version: 1\nidentity:\n  generate: true\nbroadcast:\n  delivery: one\n  tls:\n    listen: 127.0.0.1:2\n    self_signed: true\n", []want{{7, "broadcast.tls.listen", "plain TCP listener only"}}},
	{"negative max_clients", "version: 1\nbroadcast:\n  max_clients: -1\n", []want{{3, "broadcast.max_clients", "negative"}}},
	{"negative max_unauthenticated", "version: 1\nbroadcast:\n  signed:\n    max_unauthenticated: -3\n",
		[]want{{4, "broadcast.signed.max_unauthenticated", "must not be negative, got -3"}}},
	{"string for max_unauthenticated", "version: 1\nbroadcast:\n  signed:\n    max_unauthenticated: many\n",
		[]want{{4, "broadcast.signed.max_unauthenticated", "whole number"}}},
	{"negative idle_timeout", "version: 1\nbroadcast:\n  idle_timeout: -1s\n", []want{{3, "broadcast.idle_timeout", "negative"}}},
	{"tcp_keepalive idle below a second", "version: 1\nbroadcast:\n  tcp_keepalive:\n    idle: 500ms\n",
		[]want{{4, "broadcast.tcp_keepalive.idle", "whole number of seconds from 1s to 32767s, got 500ms"}}},
	{"tcp_keepalive interval not whole seconds", "version: 1\nbroadcast:\n  tcp_keepalive: {interval: 1500ms}\n",
		[]want{{3, "broadcast.tcp_keepalive.interval", "whole number of seconds"}}},
	{"tcp_keepalive idle too long", "version: 1\nbroadcast:\n  tcp_keepalive:\n    idle: 10h\n",
		[]want{{4, "broadcast.tcp_keepalive.idle", "32767s"}}},
	{"tcp_keepalive zero count", "version: 1\nbroadcast:\n  tcp_keepalive:\n    count: 0\n",
		[]want{{4, "broadcast.tcp_keepalive.count", "from 1 to 127 probes, got 0"}}},
	{"tcp_keepalive count too large", "version: 1\nbroadcast:\n  tcp_keepalive:\n    count: 128\n",
		[]want{{4, "broadcast.tcp_keepalive.count", "got 128"}}},
	{"tcp_keepalive misspelt key", "version: 1\nbroadcast:\n  tcp_keepalive:\n    intervall: 1s\n",
		[]want{{4, "broadcast.tcp_keepalive.intervall", `unknown field "intervall" in broadcast.tcp_keepalive`}}},
	{"tcp_keepalive int for duration", "version: 1\nbroadcast:\n  tcp_keepalive:\n    idle: 30\n",
		[]want{{4, "broadcast.tcp_keepalive.idle", "30s"}}},
	{"negative max_unknown_lines", "version: 1\nbroadcast:\n  max_unknown_lines: -1\n", []want{{3, "broadcast.max_unknown_lines", "must not be negative, got -1"}}},
	{"small max_client_line", "version: 1\nbroadcast:\n  max_client_line: 63\n", []want{{3, "broadcast.max_client_line", "at least 64"}}},
	{"zero queue_lines", "version: 1\nbroadcast:\n  queue_lines: 0\n", []want{{3, "broadcast.queue_lines", "positive"}}},
	{"negative drain_timeout", "version: 1\nbroadcast:\n  drain_timeout: -5s\n", []want{{3, "broadcast.drain_timeout", "negative"}}},
	{"queue_bytes equal to max_line_bytes", "version: 1\nbroadcast:\n  queue_bytes: 1024\nfeed:\n  max_line_bytes: 1024\n",
		[]want{{3, "broadcast.queue_bytes", "larger than feed.max_line_bytes"}}},
	{"queue_bytes zero", "version: 1\nbroadcast:\n  queue_bytes: 0\n",
		[]want{{3, "broadcast.queue_bytes", "positive"}}}, // one problem, one message
	{"max_line_bytes zero", "version: 1\nfeed:\n  max_line_bytes: 0\n", []want{{3, "feed.max_line_bytes", "from 1 to"}}},
	{"max_line_bytes too large", "version: 1\nbroadcast:\n  queue_bytes: 1000000000\nfeed:\n  max_line_bytes: 100000000\n",
		[]want{{5, "feed.max_line_bytes", "from 1 to"}}},
	{"bad feed.source", "version: 1\nfeed:\n  source: socket\n", []want{{3, "feed.source", "stdin or fifo"}}},
	{"nats work queue with a sequenced listener", "version: 1\nbroadcast:\n  delivery: one\n  sequenced:\n    listen: 127.0.0.1:2\nnats:\n  urls: [nats://127.0.0.1:4222]\n", []want{{5, "broadcast.sequenced.listen", "no listener broadcasts"}}},
	{"nats work queue on the feed's subject", "version: 1\nbroadcast:\n  delivery: one\nnats:\n  urls: [nats://127.0.0.1:4222]\n  stream:\n    subjects: [chatty.feed, chatty.>]\n  work_queue:\n    subject: chatty.work\n", []want{{9, "nats.work_queue.subject", "one stream only"}}},
	{"nats work queue ack wait", "version: 1\nbroadcast:\n  delivery: one\nnats:\n  urls: [nats://127.0.0.1:4222]\n  work_queue:\n    ack_wait: 100ms\n", []want{{7, "nats.work_queue.ack_wait", "from 1s to 1h"}}},
	{"bad nats url", "version: 1\nnats:\n  urls: [http://x:1]\n", []want{{3, "nats.urls", "not a NATS URL"}}},
	{"bad nats storage", "version: 1\nnats:\n  stream:\n    storage: disk\n", []want{{4, "nats.stream.storage", "file or memory"}}},
	{"bad nats start", "version: 1\nnats:\n  consume:\n    start: last\n", []want{{4, "nats.consume.start", "new, first or a stream sequence"}}},
	{"nats start zero", "version: 1\nnats:\n  consume:\n    start: 0\n", []want{{4, "nats.consume.start", "new, first or a stream sequence"}}},
	{"nats heartbeat too long", "version: 1\nnats:\n  consume:\n    heartbeat: 31s\n", []want{{4, "nats.consume.heartbeat", "from 500ms to 30s, got 31s"}}},
	{"nats wildcard publish subject", "version: 1\nnats:\n  stream:\n    subjects: [chatty.>]\n", []want{{4, "nats.stream.subjects", "no wildcard"}}},
	{"nats window zero", "version: 1\nnats:\n  publish:\n    window: 0\n", []want{{4, "nats.publish.window", "from 1 to 4096"}}},
	{"nats ack timeout over dedupe", "version: 1\nnats:\n  stream:\n    duplicate_window: 10s\n  publish:\n    ack_timeout: 5s\n", []want{{6, "nats.publish.ack_timeout", "quarter"}}},
	{"nats routes without embedded", "version: 1\nnats:\n  embedded:\n    routes: [nats://127.0.0.1:6222]\n", []want{{3, "nats.embedded.enabled", "must be true"}}},
	{"nats routes without cluster listen", "version: 1\nnats:\n  embedded:\n    enabled: true\n    routes: [nats://127.0.0.1:6222]\n", []want{{3, "nats.embedded.cluster_listen", "required"}}},
	{"nats nkey and creds", "version: 1\nnats:\n  urls: [nats://127.0.0.1:4222]\n  credentials_file: /a\n  nkey_file: /b\n", []want{{5, "nats.nkey_file", "choose one"}}},

	{"fifo without path", "version: 1\nfeed:\n  source: fifo\n", []want{{2, "feed.path", "required when feed.source is fifo"}}},
	{"bad on_eof", "version: 1\nfeed:\n  on_eof: exit\n", []want{{3, "feed.on_eof", "keep or stop"}}},
	{"negative pool.size", "version: 1\npool:\n  size: -1\n", []want{{3, "pool.size", "from 0 to 10000"}}},
	{"pool.size too large", "version: 1\npool:\n  size: 10001\n", []want{{3, "pool.size", "from 0 to 10000"}}},
	{"empty pool.command program", "version: 1\npool:\n  command: ['', -child, '{port}']\n", []want{{3, "pool.command", "must not be empty"}}},
	{"negative min_uptime", "version: 1\npool:\n  min_uptime: -1s\n", []want{{3, "pool.min_uptime", "positive"}}},
	{"zero min_uptime", "version: 1\npool:\n  min_uptime: 0s\n", []want{{3, "pool.min_uptime", "positive"}}},
	{"zero backoff_initial", "version: 1\npool:\n  backoff_initial: 0s\n", []want{{3, "pool.backoff_initial", "positive"}}},
	{"backoff_max below backoff_initial", "version: 1\npool:\n  backoff_initial: 2s\n  backoff_max: 1s\n",
		[]want{{4, "pool.backoff_max", "at least pool.backoff_initial (2s)"}}},
	{"zero stop_timeout", "version: 1\npool:\n  stop_timeout: 0s\n", []want{{3, "pool.stop_timeout", "positive"}}},
	{"zero lifetime_min", "version: 1\npool:\n  worker:\n    lifetime_min: 0s\n    lifetime_max: 1s\n",
		[]want{{4, "pool.worker.lifetime_min", "positive"}}},
	{"lifetime_max below lifetime_min", "version: 1\npool:\n  worker:\n    lifetime_min: 2m\n    lifetime_max: 1m\n",
		[]want{{5, "pool.worker.lifetime_max", "at least pool.worker.lifetime_min (2m0s)"}}},
	{"keepalive_max below keepalive_min", "version: 1\npool:\n  worker:\n    keepalive_min: 20s\n",
		[]want{{3, "pool.worker.keepalive_max", "at least pool.worker.keepalive_min (20s)"}}},
	{"zero keepalive_timeout", "version: 1\npool:\n  worker:\n    keepalive_timeout: 0s\n",
		[]want{{4, "pool.worker.keepalive_timeout", "positive"}}},
	{"bad log level", "version: 1\nlog:\n  level: verbose\n", []want{{3, "log.level", "debug, info, warning or error"}}},
	{"bad log format", "version: 1\nlog:\n  format: xml\n", []want{{3, "log.format", "text or json"}}},
	{"short summary interval", "version: 1\nlog:\n  summary_interval: 10ms\n", []want{{3, "log.summary_interval", "0 (off) or at least 1s"}}},
	{"websocket listen", "version: 1\nbroadcast:\n  websocket:\n    listen: nowhere\n", []want{{4, "broadcast.websocket.listen", "host:port"}}},
	{"websocket on the text port", "version: 1\nbroadcast:\n  listen: 127.0.0.1:7000\n  websocket:\n    listen: 127.0.0.1:7000\n",
		[]want{{5, "broadcast.websocket.listen", "must differ from broadcast.listen"}}},
	{"websocket origin with a path", "version: 1\nbroadcast:\n  websocket:\n    allowed_origins: [\"https://ok.example\", \"https://x.example/page\"]\n",
		[]want{{4, "broadcast.websocket.allowed_origins", `entry 2, "https://x.example/page", must be an origin`}}},
	{"websocket origin without scheme", "version: 1\nbroadcast:\n  websocket:\n    allowed_origins: [example.com]\n",
		[]want{{4, "broadcast.websocket.allowed_origins", "http:// or https://"}}},
	{"websocket ping not below idle", "version: 1\nbroadcast:\n  idle_timeout: 10s\n  websocket:\n    listen: 127.0.0.1:8080\n    ping_interval: 10s\n",
		[]want{{6, "broadcast.websocket.ping_interval", "shorter than broadcast.idle_timeout"}}},
	{"websocket zero ping", "version: 1\nbroadcast:\n  websocket:\n    ping_interval: 0s\n", []want{{4, "broadcast.websocket.ping_interval", "positive"}}},
	{"websocket tls files without enabled", "version: 1\nbroadcast:\n  websocket:\n    listen: 127.0.0.1:8080\n    tls:\n      cert_file: c.pem\n",
		[]want{{5, "broadcast.websocket.tls.enabled", "must be true"}}},
	{"websocket tls without files", "version: 1\nbroadcast:\n  websocket:\n    listen: 127.0.0.1:8080\n    tls:\n      enabled: true\n",
		[]want{{5, "broadcast.websocket.tls.cert_file", "required"}, {5, "broadcast.websocket.tls.key_file", "required"}}},
	{"websocket unknown key", "version: 1\nbroadcast:\n  websocket:\n    origins: [x]\n", []want{{4, "broadcast.websocket.origins", "unknown field"}}},
}

func TestParseErrors(t *testing.T) {
	for _, tc := range parseErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("test.yaml", []byte(tc.yaml))
			checkProblems(t, "test.yaml", err, tc.want)
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("Parse returned a configuration with its error: %+v", cfg)
			}
		})
	}
}

// TestParseReportsAllDecodeErrors checks that one bad file yields one error
// listing every decoding problem, each at its own line.
func TestParseReportsAllDecodeErrors(t *testing.T) {
	const file = `version: 1
broadcast:
  listen: 127.0.0.1:54321
  max_clients: many
  idle_timeout: 60
feed:
  sorce: stdin
pool:
  size: 4
  worker:
    keepalive_max: soon
log:
  levl: debug
`
	_, err := Parse("many.yaml", []byte(file))
	checkProblems(t, "many.yaml", err, []want{
		{4, "broadcast.max_clients", "whole number"},
		{5, "broadcast.idle_timeout", "duration"},
		{7, "feed.sorce", "unknown field"},
		{11, "pool.worker.keepalive_max", "duration"},
		{13, "log.levl", "unknown field"},
	})
}

// TestParseReportsAllValidationErrors checks the same for Validate's rules.
func TestParseReportsAllValidationErrors(t *testing.T) {
	const file = `version: 1
broadcast:
  listen: localhost
  max_clients: -5
feed:
  source: fifo
  on_eof: quit
pool:
  size: 20000
  backoff_initial: 1s
  backoff_max: 500ms
log:
  level: loud
  format: xml
`
	_, err := Parse("many.yaml", []byte(file))
	checkProblems(t, "many.yaml", err, []want{
		{3, "broadcast.listen", "host:port"},
		{4, "broadcast.max_clients", "negative"},
		{5, "feed.path", "required"}, // absent: the line of its section
		{7, "feed.on_eof", "keep or stop"},
		{9, "pool.size", "from 0 to"},
		{11, "pool.backoff_max", "at least"},
		{13, "log.level", "debug"},
		{14, "log.format", "text or json"},
	})
}

func TestDefaultIsValid(t *testing.T) {
	cfg := Default()
	if ps := cfg.Validate(); len(ps) != 0 {
		t.Fatalf("Default().Validate() = %v", ps)
	}
	if cfg.Broadcast.Listen != "127.0.0.1:54321" || cfg.Pool.Size != 16 {
		t.Errorf("Default() listens on %q with %d workers, want 127.0.0.1:54321 and 16",
			cfg.Broadcast.Listen, cfg.Pool.Size)
	}
}

func TestLoadBuiltInDefault(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("Load(\"\") = %+v\nwant Default() = %+v", cfg, Default())
	}
}

func TestVersionOnlyIsDefault(t *testing.T) {
	cfg, err := Parse("v.yaml", []byte("version: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("Parse(version: 1) = %+v\nwant Default() = %+v", cfg, Default())
	}
}

func TestParseOverridesDefaults(t *testing.T) {
	const file = `version: 1
broadcast:
  listen: "[::1]:7000"
  idle_timeout: 1m30s
feed:
  source: fifo
  path: /run/chatty/feed
pool:
  size: 0
  command: [chatty_server, -child, "{port}"]
log:
  level: warning
  format: json
`
	cfg, err := Parse("o.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Broadcast.Listen = "[::1]:7000"
	want.Broadcast.IdleTimeout = 90 * time.Second
	want.Feed.Source = SourceFIFO
	want.Feed.Path = "/run/chatty/feed"
	want.Pool.Size = 0
	want.Pool.Command = []string{"chatty_server", "-child", "{port}"}
	want.Log = Log{Level: LevelWarning, Format: FormatJSON}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse = %+v\nwant %+v", cfg, want)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()

	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(dir, "nope.yaml")
		_, err := Load(path)
		if !errors.Is(err, ErrNoFile) || !strings.Contains(err.Error(), path) {
			t.Errorf("Load(missing) = %v, want ErrNoFile naming %s", err, path)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte("version: 1\nlog:\n  format: xml\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		checkProblems(t, path, err, []want{{3, "log.format", "text or json"}})
	})
	t.Run("valid", func(t *testing.T) {
		path := filepath.Join(dir, "good.yaml")
		if err := os.WriteFile(path, []byte("version: 1\npool:\n  size: 3\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err != nil || cfg.Pool.Size != 3 {
			t.Errorf("Load(good) = size %d, %v; want size 3, no error", cfg.Pool.Size, err)
		}
	})
}

// TestMarshalRoundTrip checks that what print-config prints, yaml.Marshal of
// the effective configuration, parses back to the same configuration.
func TestMarshalRoundTrip(t *testing.T) {
	custom := Default()
	custom.Broadcast.IdleTimeout = 1500 * time.Millisecond
	custom.Broadcast.DrainTimeout = 0
	custom.Pool.Command = []string{"chatty_server", "-child", "{port}", "yes", "null", "1"}
	custom.Pool.Worker.LifetimeMax = time.Hour + 2*time.Minute + 3*time.Second + 4*time.Nanosecond
	custom.Control = Control{Socket: "/run/chatty: control.sock", Group: "#wheel"}
	custom.Log.File = "~"

	for name, cfg := range map[string]Config{"default": Default(), "custom": custom} {
		t.Run(name, func(t *testing.T) {
			out, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(out), "idle_timeout: ") || strings.Contains(string(out), "idle_timeout: 60000000000") {
				t.Errorf("durations are not marshalled as text:\n%s", out)
			}
			got, err := Parse("print-config", out)
			if err != nil {
				t.Fatalf("Parse(yaml.Marshal(cfg)): %v\n%s", err, out)
			}
			if !reflect.DeepEqual(got, cfg) {
				t.Errorf("round trip changed the configuration:\ngot  %+v\nwant %+v\nyaml:\n%s", got, cfg, out)
			}
		})
	}
}

func TestExampleFileIsDefault(t *testing.T) {
	cfg, err := Load(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("%s = %+v\nwant Default() = %+v", exampleFile, cfg, Default())
	}
}

// keyPath is the dotted yaml path of one field of Config.
type keyPath struct {
	path    string
	section bool // the field holds further keys
}

// keyPaths returns the key path of every field of t, sections and their
// fields alike, in declaration order.
func keyPaths(t reflect.Type, prefix string) []keyPath {
	var paths []keyPath
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if opts == "inline" {
			paths = append(paths, keyPaths(f.Type, prefix)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		path := prefix + name
		section := f.Type.Kind() == reflect.Struct
		paths = append(paths, keyPath{path, section})
		if section {
			paths = append(paths, keyPaths(f.Type, path+".")...)
		}
	}
	return paths
}

// documentedKeys returns every key path set in the YAML mapping n, with the
// comments written above or beside each key.
func documentedKeys(n *yaml.Node, prefix string, into map[string]string) {
	if n.Kind == yaml.DocumentNode {
		documentedKeys(n.Content[0], prefix, into)
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := prefix + k.Value
		into[path] = k.HeadComment + "\n" + k.LineComment
		documentedKeys(v, path+".", into)
	}
}

// TestExampleFileDocumentsEveryKey keeps configs/chattyd.yaml in step with
// Config: every field must be set there, with a comment that gives its
// default, and the file must set nothing Config lacks.
func TestExampleFileDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	documentedKeys(&root, "", documented)

	paths := keyPaths(reflect.TypeFor[Config](), "")
	if len(paths) < 30 {
		t.Fatalf("found only %d key paths in Config: %v", len(paths), paths)
	}
	known := map[string]bool{}
	for _, p := range paths {
		known[p.path] = true
		comment, ok := documented[p.path]
		switch {
		case !ok:
			t.Errorf("%s does not document %s", exampleFile, p.path)
		case strings.TrimSpace(comment) == "":
			t.Errorf("%s: %s has no comment", exampleFile, p.path)
		case !p.section && !strings.Contains(strings.ToLower(comment), "default"):
			t.Errorf("%s: the comment on %s does not give its default", exampleFile, p.path)
		}
	}
	for p := range documented {
		if !known[p] {
			t.Errorf("%s sets %s, which Config does not have", exampleFile, p)
		}
	}
	for _, s := range []string{"chatty_server", "{host}", "{port}", "{addr}", "{slot}"} {
		if !strings.Contains(string(data), s) {
			t.Errorf("%s: the pool.command example lacks %s", exampleFile, s)
		}
	}
}

// Decode errors and validation errors in one file are reported together,
// and a field with a type error is not reported again by validation.
func TestDecodeAndValidationProblemsTogether(t *testing.T) {
	in := "version: 1\nbroadcast:\n  max_clients: lots\n  queue_lines: -5\nlog:\n  levle: debug\n  format: xml\n"
	_, err := Parse("both.yaml", []byte(in))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	got := map[string]int{}
	for _, p := range ce.Problems {
		got[p.Field] = p.Line
	}
	want := map[string]int{"broadcast.max_clients": 3, "broadcast.queue_lines": 4, "log.levle": 6, "log.format": 7}
	if len(ce.Problems) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ce.Problems), len(want), err)
	}
	for f, line := range want {
		if l, ok := got[f]; !ok || l != line {
			t.Errorf("%s: line %d (reported %v), want line %d\n%v", f, l, ok, line, err)
		}
	}
}

func TestDemoConfigIsValid(t *testing.T) {
	cfg, err := Parse("demo.yaml", DemoYAML)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Pool.Size == 0 || cfg.Pool.Worker.LifetimeMax > time.Minute {
		t.Errorf("the demo must show respawns within a minute: %d workers living up to %s", cfg.Pool.Size, cfg.Pool.Worker.LifetimeMax)
	}
	if cfg.Log.SummaryInterval != 5*time.Second {
		t.Errorf("the demo's log.summary_interval = %s, want 5s (make run stays readable at info level)", cfg.Log.SummaryInterval)
	}
	if Default().Log.SummaryInterval != 0 {
		t.Errorf("log.summary_interval is on by default")
	}
}

func TestIdentity(t *testing.T) {
	cfg, err := Parse("id.yaml", []byte("version: 1\nidentity:\n  key_file: /etc/chattyd/id.key\n  generate: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Identity{KeyFile: "/etc/chattyd/id.key", Generate: true}); cfg.Identity != want {
		t.Errorf("identity = %+v, want %+v", cfg.Identity, want)
	}
	if !cfg.Identity.Enabled() || cfg.Identity.Path() != "/etc/chattyd/id.key" {
		t.Errorf("Enabled() = %v, Path() = %q", cfg.Identity.Enabled(), cfg.Identity.Path())
	}
	if d := Default().Identity; d.Enabled() {
		t.Errorf("the default identity %+v is enabled; want none unless configured", d)
	}

	_, err = Parse("bad.yaml", []byte("version: 1\nidentity:\n  key_file: /etc/chattyd/id.key.pub\n  generat: true\n"))
	checkProblems(t, "bad.yaml", err, []want{
		{4, "identity.generat", "unknown field"},
		{3, "identity.key_file", "public key"},
	})
	_, err = Parse("dir.yaml", []byte("version: 1\nidentity:\n  key_file: /etc/chattyd/\n"))
	checkProblems(t, "dir.yaml", err, []want{{3, "identity.key_file", "directory"}})
}

func TestStateDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Setenv("STATE_DIRECTORY", "")
		if got := StateDir(); got != "/var/lib/chattyd" {
			t.Errorf("as root StateDir() = %q, want /var/lib/chattyd", got)
		}
	}
	for _, tc := range []struct {
		name, state, xdg, want string
	}{
		{"systemd", "/var/lib/chattyd-a", "/x", "/var/lib/chattyd-a"},
		{"systemd lists several", "/var/lib/a:/var/lib/b", "", "/var/lib/a"},
		{"xdg", "", "/home/u/.state", "/home/u/.state/chattyd"},
		{"home", "", "", "/home/u/.local/state/chattyd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.state == "" && os.Geteuid() == 0 {
				t.Skip("as root the state directory is /var/lib/chattyd")
			}
			t.Setenv("STATE_DIRECTORY", tc.state)
			t.Setenv("XDG_STATE_HOME", tc.xdg)
			t.Setenv("HOME", "/home/u")
			if got := StateDir(); got != tc.want {
				t.Errorf("StateDir() = %q, want %q", got, tc.want)
			}
			if got, want := DefaultKeyFile(), tc.want+"/identity.key"; got != want {
				t.Errorf("DefaultKeyFile() = %q, want %q", got, want)
			}
		})
	}
}

func TestSignedListener(t *testing.T) {
	cfg, err := Parse("signed.yaml", []byte("version: 1\nidentity:\n  generate: true\nbroadcast:\n  signed:\n    listen: 127.0.0.1:54323\n    mode: per-message\n    checkpoint_every: 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantSigned := Signed{Listen: "127.0.0.1:54323", Mode: SignPerMessage, CheckpointEvery: 10,
		CheckpointInterval: signed.DefaultCheckpointInterval, TimestampWindow: 5 * time.Minute,
		FeedType: MessageType(message.Info), Auth: AuthNone, MaxUnauthenticated: 1024, UpstreamRate: 20, UpstreamBurst: 40}
	if cfg.Broadcast.Signed != wantSigned {
		t.Errorf("signed = %+v, want %+v", cfg.Broadcast.Signed, wantSigned)
	}

	const bad = `version: 1
broadcast:
  signed:
    listen: 127.0.0.1:54321
    mode: fast
    checkpoint_every: 0
    checkpoint_interval: 0s
feed:
  max_line_bytes: 2000000
`
	_, err = Parse("bad.yaml", []byte(bad))
	checkProblems(t, "bad.yaml", err, []want{
		{4, "broadcast.signed.listen", "must differ"},
		{4, "broadcast.signed.listen", "needs an identity"},
		{9, "feed.max_line_bytes", "at most 1048576"},
		{5, "broadcast.signed.mode", "chained or per-message"},
		{6, "broadcast.signed.checkpoint_every", "positive"},
		{7, "broadcast.signed.checkpoint_interval", "positive"},
	})
}

func TestWorkerProtocol(t *testing.T) {
	_, err := Parse("p.yaml", []byte("version: 1\npool:\n  worker:\n    protocol: signed\n"))
	checkProblems(t, "p.yaml", err, []want{{4, "pool.worker.protocol", "set broadcast.signed.listen"}})
	_, err = Parse("q.yaml", []byte("version: 1\npool:\n  worker:\n    protocol: binary\n"))
	checkProblems(t, "q.yaml", err, []want{{4, "pool.worker.protocol", "text or signed"}})
	cfg, err := Parse("ok.yaml", []byte("version: 1\nidentity:\n  generate: true\nbroadcast:\n  signed:\n    listen: 127.0.0.1:1\npool:\n  worker:\n    protocol: signed\n"))
	if err != nil || cfg.Pool.Worker.Protocol != ProtocolSigned {
		t.Fatalf("protocol %q, %v", cfg.Pool.Worker.Protocol, err)
	}
	if Default().Pool.Worker.Protocol != ProtocolText {
		t.Error("workers speak text by default")
	}
}

func TestPoolReplay(t *testing.T) {
	if Default().Pool.Replay != ReplayUnacked {
		t.Error("slots replay unacked lines by default")
	}
	_, err := Parse("r.yaml", []byte("version: 1\npool:\n  replay: all\n"))
	checkProblems(t, "r.yaml", err, []want{{3, "pool.replay", `must be unacked or none, got "all"`}})
	for _, tc := range []struct {
		name string
		want Replay
	}{{"none", ReplayNone}, {"unacked", ReplayUnacked}} {
		cfg, err := Parse("ok.yaml", []byte("version: 1\npool:\n  replay: "+tc.name+"\n"))
		if err != nil || cfg.Pool.Replay != tc.want {
			t.Fatalf("replay %s: got %v, %v", tc.name, cfg.Pool.Replay, err)
		}
	}
	prev, next := Default(), Default()
	next.Pool.Replay = ReplayNone
	if got := RestartOnlyChanges(prev, next); len(got) != 0 {
		t.Errorf("pool.replay is live, but a reload reports %v as restart-only", got)
	}
}

func TestAuthorizedKeysNeedsSignedListener(t *testing.T) {
	_, err := Parse("a.yaml", []byte("version: 1\nidentity:\n  generate: true\n  authorized_keys: /etc/chattyd/clients\n"))
	checkProblems(t, "a.yaml", err, []want{{4, "identity.authorized_keys", "broadcast.signed.listen"}})
}

func TestSignedAuthAndTLS(t *testing.T) {
	cfg, err := Parse("ok.yaml", []byte(`version: 1
identity:
  generate: true
  authorized_keys: /etc/chattyd/clients
broadcast:
  tls:
    listen: 127.0.0.1:2
    self_signed: true
  signed:
    listen: 127.0.0.1:1
    auth: authorized_keys
    max_unauthenticated: 16
    upstream_rate: 2.5
    upstream_burst: 3
    tls:
      enabled: true
      self_signed: true
pool:
  worker:
    protocol: signed
`))
	if err != nil {
		t.Fatal(err)
	}
	sg := cfg.Broadcast.Signed
	if sg.Auth != AuthAuthorizedKeys || sg.MaxUnauthenticated != 16 || sg.UpstreamRate != 2.5 || sg.UpstreamBurst != 3 || !sg.TLS.Enabled || !sg.TLS.SelfSigned || !cfg.Broadcast.TLS.SelfSigned {
		t.Fatalf("signed %+v, tls %+v", sg, cfg.Broadcast.TLS)
	}

	const bad = `version: 1
broadcast:
  tls:
    listen: 127.0.0.1:2
    self_signed: true
    cert_file: /c.pem
  signed:
    listen: 127.0.0.1:1
    feed_type: Notice
    auth: keys
    upstream_rate: 0
    upstream_burst: 0
    tls:
      self_signed: true
    max_unauthenticated: -1
`
	_, err = Parse("bad.yaml", []byte(bad))
	checkProblems(t, "bad.yaml", err, []want{
		{5, "broadcast.tls.self_signed", "excludes cert_file"},
		{8, "broadcast.signed.listen", "needs an identity"},
		{9, "broadcast.signed.feed_type", `unknown message type "Notice"`},
		{10, "broadcast.signed.auth", "none or authorized_keys"},
		{15, "broadcast.signed.max_unauthenticated", "must not be negative, got -1"},
		{11, "broadcast.signed.upstream_rate", "positive"},
		{12, "broadcast.signed.upstream_burst", "positive"},
		{13, "broadcast.signed.tls.enabled", "must be true"},
	})

	// Each of these is refused with the one problem named.
	const signedAuth = "version: 1\nidentity:\n  generate: true\nbroadcast:\n  signed:\n    listen: 127.0.0.1:1\n    auth: authorized_keys\n"
	for _, tc := range []struct {
		file, yaml string
		want       want
	}{
		{"pool.yaml", signedAuth + "    max_unauthenticated: 16\npool:\n  size: 20\n  worker:\n    protocol: signed\n",
			want{8, "broadcast.signed.max_unauthenticated", "must be at least pool.size (20)"}},
		{"noid.yaml", "version: 1\nbroadcast:\n  tls:\n    listen: 127.0.0.1:2\n    self_signed: true\n",
			want{5, "broadcast.tls.self_signed", "set identity.key_file"}},
		{"locked.yaml", signedAuth + "    tls:\n      enabled: true\n      cert_file: /c.pem\n      key_file: /k.pem\npool:\n  worker:\n    protocol: signed\n",
			want{14, "pool.worker.protocol", "self_signed: true"}},
		{"nobody.yaml", signedAuth, want{7, "broadcast.signed.auth", "no client could ever connect"}},
	} {
		_, err = Parse(tc.file, []byte(tc.yaml))
		checkProblems(t, tc.file, err, []want{tc.want})
	}
}

// metrics.listen is off by default; an address is checked like the
// listeners', and refused with the field named.
func TestMetricsListen(t *testing.T) {
	if Default().Metrics.Listen != "" {
		t.Errorf("metrics.listen defaults to %q, want none", Default().Metrics.Listen)
	}
	cfg, err := Parse("ok.yaml", []byte("version: 1\nmetrics:\n  listen: 127.0.0.1:9464\n"))
	if err != nil || cfg.Metrics.Listen != "127.0.0.1:9464" {
		t.Fatalf("metrics.listen %q, %v", cfg.Metrics.Listen, err)
	}
	// Port 0 lets the kernel choose, for every listener alike.
	if _, err := Parse("zero.yaml", []byte("version: 1\nbroadcast:\n  listen: 127.0.0.1:0\nmetrics:\n  listen: 127.0.0.1:0\n")); err != nil {
		t.Errorf("port 0 for both: %v", err)
	}
	for _, tc := range []struct{ name, yaml, msg string }{
		{"no port", "version: 1\nmetrics:\n  listen: localhost\n", "not a host:port address"},
		{"empty port", "version: 1\nmetrics:\n  listen: \"127.0.0.1:\"\n", "not a host:port address"},
		{"broadcast's", "version: 1\nmetrics:\n  listen: 127.0.0.1:54321\n", "must differ from broadcast.listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("m.yaml", []byte(tc.yaml))
			checkProblems(t, "m.yaml", err, []want{{3, "metrics.listen", tc.msg}})
		})
	}
}
