package config

import (
	"reflect"
	"slices"
)

// reloadRule is what a reload does with a changed setting.
type reloadRule struct {
	restart bool   // the change applies only at the next start
	report  string // the name it is reported under; "" for its own path
}

var (
	live        = reloadRule{}
	restartOnly = reloadRule{restart: true}
)

// restartAs is restart-only, reported under the name of its section.
func restartAs(name string) reloadRule { return reloadRule{restart: true, report: name} }

// reloadRules declares every setting of Config, by its YAML path, live
// (a reload applies it) or restart-only. A setting missing here is taken
// as restart-only, and TestReloadRulesDeclareEverySetting fails.
var reloadRules = map[string]reloadRule{
	"version": live,

	"broadcast.listen":       restartOnly,
	"broadcast.max_clients":  live, // the limits apply to every listener
	"broadcast.idle_timeout": live,
	// TCP keep-alive is set on each connection as it is accepted: a
	// reload applies to those accepted after it.
	"broadcast.tcp_keepalive.idle":     live,
	"broadcast.tcp_keepalive.interval": live,
	"broadcast.tcp_keepalive.count":    live,
	"broadcast.max_client_line":        live,
	"broadcast.max_unknown_lines":      live,
	"broadcast.queue_bytes":            live,
	"broadcast.queue_lines":            live,
	"broadcast.drain_timeout":          live,
	// The listener is served by the broadcaster or the work queue from
	// the start; the queue's settings apply at once.
	"broadcast.delivery":                  restartOnly,
	"broadcast.work_queue.max_in_flight":  live,
	"broadcast.work_queue.ack_timeout":    live,
	"broadcast.work_queue.max_deliveries": live,
	"broadcast.work_queue.dead_letters":   live,

	// The TLS listener's certificate, from files or the identity, is
	// loaded again.
	"broadcast.tls.listen":         restartOnly,
	"broadcast.tls.cert_file":      live,
	"broadcast.tls.key_file":       live,
	"broadcast.tls.self_signed":    live,
	"broadcast.tls.client_ca_file": live,

	// The signed listener is set up at start, but for its certificate
	// files, read again, and max_unauthenticated, one of the limits.
	// Where its certificate comes from stays, as built-in workers pin
	// the one it started with.
	"broadcast.signed.listen":              restartAs("broadcast.signed"),
	"broadcast.signed.mode":                restartAs("broadcast.signed"),
	"broadcast.signed.checkpoint_every":    restartAs("broadcast.signed"),
	"broadcast.signed.checkpoint_interval": restartAs("broadcast.signed"),
	"broadcast.signed.timestamp_window":    restartAs("broadcast.signed"),
	"broadcast.signed.feed_type":           restartAs("broadcast.signed"),
	"broadcast.signed.auth":                restartAs("broadcast.signed"),
	"broadcast.signed.max_unauthenticated": live,
	"broadcast.signed.upstream_rate":       restartAs("broadcast.signed"),
	"broadcast.signed.upstream_burst":      restartAs("broadcast.signed"),
	"broadcast.signed.tls.enabled":         restartAs("broadcast.signed"),
	"broadcast.signed.tls.cert_file":       live,
	"broadcast.signed.tls.key_file":        live,
	"broadcast.signed.tls.self_signed":     restartAs("broadcast.signed"),
	"broadcast.signed.tls.client_ca_file":  live,

	// The sequenced listener is bound at start; retention applies at
	// once to every listener's log.
	"broadcast.sequenced.listen": restartOnly,
	"broadcast.retain.bytes":     live,
	"broadcast.retain.lines":     live,
	"broadcast.retain.age":       live,

	// The WebSocket listener is set up at start, but for its
	// certificate files, read again, like the signed listener's.
	"broadcast.websocket.listen":              restartAs("broadcast.websocket"),
	"broadcast.websocket.allowed_origins":     restartAs("broadcast.websocket"),
	"broadcast.websocket.ping_interval":       restartAs("broadcast.websocket"),
	"broadcast.websocket.token_file":          restartAs("broadcast.websocket"),
	"broadcast.websocket.auth":                restartAs("broadcast.websocket"),
	"broadcast.websocket.max_unauthenticated": live,
	"broadcast.websocket.tls.enabled":         restartAs("broadcast.websocket"),
	"broadcast.websocket.tls.cert_file":       live,
	"broadcast.websocket.tls.key_file":        live,
	"broadcast.websocket.tls.self_signed":     restartAs("broadcast.websocket"),
	"broadcast.websocket.tls.client_ca_file":  live,

	"feed.source":         restartOnly,
	"feed.path":           restartAs("feed.source"),
	"feed.max_line_bytes": restartOnly,
	"feed.on_eof":         live,

	// The pool takes new options for each next start of a worker.
	"pool.size":                     live,
	"pool.command":                  live,
	"pool.min_uptime":               live,
	"pool.backoff_initial":          live,
	"pool.backoff_max":              live,
	"pool.stop_timeout":             live,
	"pool.replay":                   live, // from each slot's next worker
	"pool.worker.lifetime_min":      live,
	"pool.worker.lifetime_max":      live,
	"pool.worker.keepalive_min":     live,
	"pool.worker.keepalive_max":     live,
	"pool.worker.keepalive_timeout": live,
	"pool.worker.protocol":          live,

	"control.socket": restartAs("control"),
	"control.group":  restartAs("control"),
	"metrics.listen": restartAs("metrics.listen"),

	"identity.key_file":        restartAs("identity"),
	"identity.generate":        restartAs("identity"),
	"identity.authorized_keys": live, // read again

	"log.level":            live,
	"log.format":           live,
	"log.file":             restartOnly,
	"log.summary_interval": restartOnly,

	// The NATS connection, stream, publisher and consumer are set up at
	// start.
	"nats.urls":                       restartAs("nats"),
	"nats.credentials_file":           restartAs("nats"),
	"nats.nkey_file":                  restartAs("nats"),
	"nats.tls.ca_file":                restartAs("nats"),
	"nats.tls.cert_file":              restartAs("nats"),
	"nats.tls.key_file":               restartAs("nats"),
	"nats.stream.name":                restartAs("nats"),
	"nats.stream.subjects":            restartAs("nats"),
	"nats.stream.create":              restartAs("nats"),
	"nats.stream.replicas":            restartAs("nats"),
	"nats.stream.storage":             restartAs("nats"),
	"nats.stream.max_msgs":            restartAs("nats"),
	"nats.stream.max_bytes":           restartAs("nats"),
	"nats.stream.max_age":             restartAs("nats"),
	"nats.stream.duplicate_window":    restartAs("nats"),
	"nats.publish.window":             restartAs("nats"),
	"nats.publish.ack_timeout":        restartAs("nats"),
	"nats.publish.buffer_bytes":       restartAs("nats"),
	"nats.publish.batch_lines":        restartAs("nats"),
	"nats.publish.batch_bytes":        restartAs("nats"),
	"nats.consume.heartbeat":          restartAs("nats"),
	"nats.consume.start":              restartAs("nats"),
	"nats.work_queue.stream":          restartAs("nats"),
	"nats.work_queue.subject":         restartAs("nats"),
	"nats.work_queue.consumer":        restartAs("nats"),
	"nats.work_queue.ack_wait":        restartAs("nats"),
	"nats.work_queue.max_ack_pending": restartAs("nats"),
	"nats.embedded.enabled":           restartAs("nats"),
	"nats.embedded.listen":            restartAs("nats"),
	"nats.embedded.server_name":       restartAs("nats"),
	"nats.embedded.store_dir":         restartAs("nats"),
	"nats.embedded.cluster_name":      restartAs("nats"),
	"nats.embedded.cluster_listen":    restartAs("nats"),
	"nats.embedded.routes":            restartAs("nats"),
}

// RestartOnlyChanges returns the names of the settings that differ from
// prev to next but apply only at restart, each once, in the order of
// Config: YAML paths such as "broadcast.listen", or a section's path
// such as "broadcast.signed" for the settings reported together.
func RestartOnlyChanges(prev, next Config) []string {
	var out []string
	for _, s := range settings() {
		a, b := reflect.ValueOf(prev).FieldByIndex(s.index), reflect.ValueOf(next).FieldByIndex(s.index)
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			continue
		}
		rule, ok := reloadRules[s.path]
		if ok && !rule.restart {
			continue
		}
		name := s.path
		if rule.report != "" {
			name = rule.report
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}
