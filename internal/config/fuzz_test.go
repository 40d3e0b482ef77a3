package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse feeds arbitrary bytes to Parse. It must not panic; what it
// rejects must come as an *Error naming the file, and what it accepts must
// be valid and survive print-config (yaml.Marshal) and Parse again.
func FuzzParse(f *testing.F) {
	// Seeds stay small: the fuzzer spends up to a minute minimizing each new
	// input, and a mutated configs/chattyd.yaml (5 KB of comments) took all
	// of a 60s run. print-config's output has every key without the prose.
	f.Add(DefaultYAML)
	if data, err := yaml.Marshal(Default()); err == nil {
		f.Add(data)
	}
	for _, tc := range parseErrorCases {
		f.Add([]byte(tc.yaml))
	}
	f.Add([]byte("version: 1\npool:\n  command: [chatty_server, -child, '{port}']\n  worker: {lifetime_min: 1ns, lifetime_max: 2562047h}\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %v (%T) is not an *Error with problems", err, err)
			}
			if !strings.HasPrefix(err.Error(), "invalid configuration fuzz.yaml:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if ps := cfg.Validate(); len(ps) != 0 {
			t.Fatalf("Parse accepted an invalid configuration: %v", ps)
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("yaml.Marshal: %v", err)
		}
		again, err := Parse("print-config", out)
		if err != nil {
			t.Fatalf("Parse(yaml.Marshal(cfg)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(again, cfg) {
			t.Fatalf("round trip changed the configuration:\ngot  %#v\nwant %#v\nyaml:\n%s", again, cfg, out)
		}
	})
}
