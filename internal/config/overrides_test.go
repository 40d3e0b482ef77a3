package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestApplyOverrides(t *testing.T) {
	cases := []struct {
		name   string
		o      Overrides
		change func(*Config)
	}{
		{"none", Overrides{}, func(*Config) {}},
		{"listen", Overrides{Listen: ptr("[::1]:7000")}, func(c *Config) { c.Broadcast.Listen = "[::1]:7000" }},
		{"ip", Overrides{IP: ptr("::1")}, func(c *Config) { c.Broadcast.Listen = "[::1]:54321" }},
		{"port", Overrides{Port: ptr(7)}, func(c *Config) { c.Broadcast.Listen = "127.0.0.1:7" }},
		{"listen then ip and port", Overrides{Listen: ptr("0.0.0.0:1"), IP: ptr("10.0.0.1"), Port: ptr(0)},
			func(c *Config) { c.Broadcast.Listen = "10.0.0.1:0" }},
		{"workers", Overrides{Workers: ptr(0)}, func(c *Config) { c.Pool.Size = 0 }},
		{"verbose", Overrides{Verbose: true}, func(c *Config) { c.Log.Level = LevelDebug }},
		{"log format", Overrides{LogFormat: ptr("json")}, func(c *Config) { c.Log.Format = FormatJSON }},
		{"control socket", Overrides{ControlSocket: ptr("/run/c.sock")}, func(c *Config) { c.Control.Socket = "/run/c.sock" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			if err := cfg.Apply(tc.o); err != nil {
				t.Fatal(err)
			}
			want := Default()
			tc.change(&want)
			if !reflect.DeepEqual(cfg, want) {
				t.Errorf("Apply = %+v\nwant %+v", cfg, want)
			}
		})
	}
}

// A bad override is refused with the error of its kind and changes nothing.
func TestApplyOverridesErrors(t *testing.T) {
	noPort := Default()
	noPort.Broadcast.Listen = "localhost"
	cases := []struct {
		name  string
		base  Config
		o     Overrides
		usage bool // a *UsageError
		want  []want
		msg   string // a substring of the error when it is neither
	}{
		{name: "ip", base: Default(), o: Overrides{IP: ptr("example.com")}, usage: true, msg: `--ip "example.com" is not an IP address`},
		{name: "port", base: Default(), o: Overrides{Port: ptr(70000)}, usage: true, msg: "--port 70000 is not a port number (0 to 65535)"},
		{name: "negative port", base: Default(), o: Overrides{IP: ptr("::1"), Port: ptr(-1)}, usage: true, msg: "--port -1"},
		{name: "no port to combine with", base: noPort, o: Overrides{Port: ptr(1)}, msg: `--ip/--port: the address "localhost" has no port to combine with`},
		{name: "listen", base: Default(), o: Overrides{Listen: ptr("nowhere")}, want: []want{{0, "broadcast.listen", "host:port"}}},
		{name: "workers", base: Default(), o: Overrides{Workers: ptr(10001)}, want: []want{{0, "pool.size", "from 0 to 10000, got 10001"}}},
		{name: "log format", base: Default(), o: Overrides{LogFormat: ptr("xml")}, want: []want{{0, "log.format", `must be text or json, got "xml"`}}},
		{name: "every problem", base: Default(), o: Overrides{Workers: ptr(-1), LogFormat: ptr("")},
			want: []want{{0, "pool.size", "got -1"}, {0, "log.format", `must be text or json, got ""`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.base
			err := cfg.Apply(tc.o)
			if !reflect.DeepEqual(cfg, tc.base) {
				t.Errorf("a refused Apply changed the configuration to %+v", cfg)
			}
			var ue *UsageError
			if errors.As(err, &ue) != tc.usage {
				t.Errorf("Apply = %v (%T); usage error %v, want %v", err, err, !tc.usage, tc.usage)
			}
			if tc.want != nil {
				checkProblems(t, OverridesFile, err, tc.want)
			} else if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Apply = %v, want an error containing %q", err, tc.msg)
			}
		})
	}
}
