package config

import (
	"reflect"
	"slices"
	"testing"
)

// Every setting of Config is declared live or restart-only, and every
// declaration is of a setting Config has.
func TestReloadRulesDeclareEverySetting(t *testing.T) {
	all := settings()
	if len(all) < 50 {
		t.Fatalf("found only %d settings in Config: %v", len(all), all)
	}
	known := map[string]bool{}
	for _, s := range all {
		known[s.path] = true
		if _, ok := reloadRules[s.path]; !ok {
			t.Errorf("%s is declared neither live nor restart-only; add it to reloadRules in reload.go", s.path)
		}
	}
	for path := range reloadRules {
		if !known[path] {
			t.Errorf("reloadRules declares %s, which Config does not have", path)
		}
	}
}

// change sets v to a different value of its type.
func change(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint8:
		v.SetUint(v.Uint() + 1)
	case reflect.Float64:
		v.SetFloat(v.Float() + 1)
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
	default:
		t.Fatalf("no way to change a %s", v.Type())
	}
}

// restartNames are the names a reload reports, each with the settings
// that need a restart: broadcast.signed is every setting of the signed
// listener but its certificate files and max_unauthenticated.
var restartNames = map[string][]string{
	"broadcast.listen":           {"broadcast.listen"},
	"broadcast.tls.listen":       {"broadcast.tls.listen"},
	"broadcast.sequenced.listen": {"broadcast.sequenced.listen"},
	"broadcast.signed": {"broadcast.signed.listen", "broadcast.signed.mode", "broadcast.signed.checkpoint_every",
		"broadcast.signed.checkpoint_interval", "broadcast.signed.timestamp_window", "broadcast.signed.feed_type",
		"broadcast.signed.auth", "broadcast.signed.upstream_rate", "broadcast.signed.upstream_burst",
		"broadcast.signed.tls.enabled", "broadcast.signed.tls.self_signed"},
	"broadcast.delivery": {"broadcast.delivery"},
	"broadcast.websocket": {"broadcast.websocket.listen", "broadcast.websocket.allowed_origins",
		"broadcast.websocket.ping_interval", "broadcast.websocket.token_file", "broadcast.websocket.auth",
		"broadcast.websocket.tls.enabled", "broadcast.websocket.tls.self_signed"},
	"feed.source":          {"feed.source", "feed.path"},
	"feed.max_line_bytes":  {"feed.max_line_bytes"},
	"identity":             {"identity.key_file", "identity.generate"},
	"control":              {"control.socket", "control.group"},
	"metrics.listen":       {"metrics.listen"},
	"log.file":             {"log.file"},
	"log.summary_interval": {"log.summary_interval"},
	"nats":                 {"nats.urls", "nats.credentials_file", "nats.nkey_file", "nats.tls.ca_file", "nats.tls.cert_file", "nats.tls.key_file", "nats.stream.name", "nats.stream.subjects", "nats.stream.create", "nats.stream.replicas", "nats.stream.storage", "nats.stream.max_msgs", "nats.stream.max_bytes", "nats.stream.max_age", "nats.stream.duplicate_window", "nats.publish.window", "nats.publish.ack_timeout", "nats.publish.buffer_bytes", "nats.publish.batch_lines", "nats.publish.batch_bytes", "nats.consume.heartbeat", "nats.consume.start", "nats.work_queue.stream", "nats.work_queue.subject", "nats.work_queue.consumer", "nats.work_queue.ack_wait", "nats.work_queue.max_ack_pending", "nats.embedded.enabled", "nats.embedded.listen", "nats.embedded.server_name", "nats.embedded.store_dir", "nats.embedded.cluster_name", "nats.embedded.cluster_listen", "nats.embedded.routes"},
}

// A change of one setting is reported under its name when it needs a
// restart, and not at all when a reload applies it.
func TestRestartOnlyChanges(t *testing.T) {
	reportedAs := map[string]string{}
	for name, paths := range restartNames {
		for _, p := range paths {
			reportedAs[p] = name
		}
	}
	for _, s := range settings() {
		t.Run(s.path, func(t *testing.T) {
			prev, next := Default(), Default()
			change(t, reflect.ValueOf(&next).Elem().FieldByIndex(s.index))
			var want []string
			if name, ok := reportedAs[s.path]; ok {
				want = []string{name}
			}
			if got := RestartOnlyChanges(prev, next); !slices.Equal(got, want) {
				t.Errorf("RestartOnlyChanges = %q, want %q", got, want)
			}
		})
	}

	prev, next := Default(), Default()
	next.Broadcast.Listen = "127.0.0.1:1"
	next.Broadcast.Signed.Mode = SignPerMessage
	next.Broadcast.Signed.Auth = AuthAuthorizedKeys
	next.Broadcast.Signed.TLS.CertFile = "/c.pem"
	next.Log.File = "/var/log/chattyd.log"
	next.Log.Level = LevelDebug
	want := []string{"broadcast.listen", "broadcast.signed", "log.file"}
	if got := RestartOnlyChanges(prev, next); !slices.Equal(got, want) {
		t.Errorf("RestartOnlyChanges = %q, want %q: each name once, in the order of Config", got, want)
	}
	if got := RestartOnlyChanges(next, next); got != nil {
		t.Errorf("RestartOnlyChanges of equal configurations = %q, want none", got)
	}
}

// A setting nobody declared is taken as restart-only: a reload reports
// it rather than ignoring it.
func TestUndeclaredSettingIsRestartOnly(t *testing.T) {
	const path = "broadcast.max_clients" // live, undeclared for the test
	rule := reloadRules[path]
	if rule.restart {
		t.Fatalf("the test needs a live setting; %s is not", path)
	}
	delete(reloadRules, path)
	t.Cleanup(func() { reloadRules[path] = rule })

	prev, next := Default(), Default()
	next.Broadcast.MaxClients++
	if got := RestartOnlyChanges(prev, next); !slices.Equal(got, []string{path}) {
		t.Errorf("RestartOnlyChanges of undeclared %s = %q, want it reported", path, got)
	}
}
