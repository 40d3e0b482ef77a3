package config

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// namedValues are the settings of a typed value (values.go), with every
// name each accepts and prints.
var namedValues = []struct {
	path  string
	names []string
}{
	{"broadcast.signed.mode", []string{"chained", "per-message"}},
	{"broadcast.signed.feed_type", []string{"Request", "Response", "Critical", "Info", "Warning", "Debug", "Error"}},
	{"broadcast.signed.auth", []string{"none", "authorized_keys"}},
	{"feed.source", []string{"stdin", "fifo"}},
	{"feed.on_eof", []string{"keep", "stop"}},
	{"pool.worker.protocol", []string{"text", "signed"}},
	{"log.level", []string{"debug", "info", "warning", "error"}},
	{"log.format", []string{"text", "json"}},
}

// nested returns YAML that sets the dotted path to value, one key a line,
// after "version: 1": the last key is on line 1 + the number of keys.
func nested(path, value string) string {
	var b strings.Builder
	b.WriteString("version: 1\n")
	keys := strings.Split(path, ".")
	for i, k := range keys {
		b.WriteString(strings.Repeat("  ", i) + k + ":")
		if i == len(keys)-1 {
			b.WriteString(" " + value)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// setPath sets the dotted path in a tree of maps to value.
func setPath(m map[string]any, path string, value any) {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = value
}

// valueAt returns the field of cfg at the dotted path.
func valueAt(t *testing.T, cfg Config, path string) reflect.Value {
	t.Helper()
	for _, s := range settings() {
		if s.path == path {
			return reflect.ValueOf(cfg).FieldByIndex(s.index)
		}
	}
	t.Fatalf("Config has no setting %s", path)
	return reflect.Value{}
}

// A name that is none of a setting's values is reported with the setting's
// line and path, the name and every value allowed, and nothing else.
func TestNamedValueErrors(t *testing.T) {
	for _, nv := range namedValues {
		t.Run(nv.path, func(t *testing.T) {
			line := 1 + strings.Count(nv.path, ".") + 1
			_, err := Parse("bad.yaml", []byte(nested(nv.path, "bogus")))
			checkProblems(t, "bad.yaml", err, []want{{line, nv.path, `"bogus"`}})
			msg := err.(*Error).Problems[0].Msg
			for _, name := range nv.names {
				if !strings.Contains(msg, name) {
					t.Errorf("the error %q does not list %s", msg, name)
				}
			}

			_, err = Parse("list.yaml", []byte(nested(nv.path, "[chained]")))
			checkProblems(t, "list.yaml", err, []want{{line, nv.path, "must be a string, got a list"}})

			// A value left invalid, as by a hand-made Config, fails
			// Validate, which names the values too.
			cfg := Default()
			valueAt(t, cfg, nv.path) // the path exists
			v := reflect.ValueOf(&cfg).Elem()
			for _, s := range settings() {
				if s.path == nv.path {
					v.FieldByIndex(s.index).SetUint(0)
				}
			}
			ps := cfg.Validate()
			if len(ps) != 1 || ps[0].Field != nv.path || !strings.Contains(ps[0].Msg, nv.names[len(nv.names)-1]) {
				t.Errorf("Validate with %s zero = %v, want one problem of %s naming its values", nv.path, ps, nv.path)
			}
			if _, err := yaml.Marshal(cfg); err == nil {
				t.Errorf("yaml.Marshal printed an invalid %s", nv.path)
			}
		})
	}
}

// Every name decodes to a typed value that print-config (yaml.Marshal)
// prints as the same name, and that parses back to the same Config.
func TestNamedValuesRoundTrip(t *testing.T) {
	for _, nv := range namedValues {
		for _, name := range nv.names {
			t.Run(nv.path+"="+name, func(t *testing.T) {
				// A file in which every value of every setting is valid.
				doc := map[string]any{
					"version":   1,
					"identity":  map[string]any{"generate": true, "authorized_keys": "/etc/chattyd/clients"},
					"broadcast": map[string]any{"signed": map[string]any{"listen": "127.0.0.1:1"}},
					"feed":      map[string]any{"path": "/run/chatty/feed"},
				}
				setPath(doc, nv.path, name)
				in, err := yaml.Marshal(doc)
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := Parse("in.yaml", in)
				if err != nil {
					t.Fatalf("%v\n%s", err, in)
				}
				if got := valueAt(t, cfg, nv.path).Interface().(interface{ String() string }).String(); got != name {
					t.Errorf("%s: %s decoded as %q", nv.path, name, got)
				}
				var buf bytes.Buffer
				enc := yaml.NewEncoder(&buf) // as chattyd print-config
				enc.SetIndent(2)
				if err := enc.Encode(cfg); err != nil {
					t.Fatal(err)
				}
				out := buf.Bytes()
				key := nv.path[strings.LastIndexByte(nv.path, '.')+1:]
				if !strings.Contains(string(out), "\n"+strings.Repeat("  ", strings.Count(nv.path, "."))+key+": "+name+"\n") {
					t.Errorf("print-config does not print %s: %s:\n%s", nv.path, name, out)
				}
				again, err := Parse("print-config", out)
				if err != nil || !reflect.DeepEqual(again, cfg) {
					t.Errorf("print-config parses back to %+v, %v; want %+v", again, err, cfg)
				}
			})
		}
	}
}

// The typed values are those of the packages that use them, and accept
// what the strings accepted: message types in any case, warn for warning.
func TestNamedValuesConvert(t *testing.T) {
	if SignChained.Mode() != signed.Chained || SignPerMessage.Mode() != signed.PerMessage {
		t.Errorf("SignMode: chained %v, per-message %v", SignChained.Mode(), SignPerMessage.Mode())
	}
	cfg, err := Parse("c.yaml", []byte("version: 1\nbroadcast:\n  signed:\n    feed_type: wARNING\nlog:\n  level: warn\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broadcast.Signed.FeedType.Type() != message.Warning || cfg.Log.Level != LevelWarning {
		t.Errorf("feed_type %v, level %v; want Warning and warning", cfg.Broadcast.Signed.FeedType, cfg.Log.Level)
	}
}
