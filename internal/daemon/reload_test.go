package daemon

import (
	"slices"
	"testing"

	"github.com/chatty-dev/chatty/internal/config"
)

// A reload applies the limits at once and warns about the settings that
// need a restart; the signed listener's max_unauthenticated is a limit.
func TestReloadLimits(t *testing.T) {
	cases := []struct {
		name        string
		change      func(*config.Config)
		restartOnly []string
	}{
		{"max_clients", func(c *config.Config) { c.Broadcast.MaxClients = 7 }, nil},
		{"max_unknown_lines", func(c *config.Config) { c.Broadcast.MaxUnknownLines = 100 }, nil},
		{"max_unauthenticated", func(c *config.Config) { c.Broadcast.Signed.MaxUnauthenticated = 5 }, nil},
		{"signed mode", func(c *config.Config) { c.Broadcast.Signed.Mode = config.SignPerMessage }, []string{"broadcast.signed"}},
		{"signed auth", func(c *config.Config) { c.Broadcast.Signed.Auth = config.AuthAuthorizedKeys }, []string{"broadcast.signed"}},
		{"metrics listen", func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:9464" }, []string{"metrics.listen"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prev := config.Default()
			next := config.Default()
			tc.change(&next)
			if got := config.RestartOnlyChanges(prev, next); !slices.Equal(got, tc.restartOnly) {
				t.Errorf("RestartOnlyChanges = %q, want %q", got, tc.restartOnly)
			}
		})
	}
	cfg := config.Default()
	cfg.Broadcast.MaxClients, cfg.Broadcast.Signed.MaxUnauthenticated = 100, 9
	cfg.Broadcast.MaxUnknownLines = 12
	if lim := limitsOf(cfg); lim.MaxClients != 100 || lim.MaxUnauthenticated != 9 || lim.MaxUnknownLines != 12 {
		t.Errorf("limitsOf: max_clients %d, max_unauthenticated %d, max_unknown_lines %d; want 100, 9 and 12",
			lim.MaxClients, lim.MaxUnauthenticated, lim.MaxUnknownLines)
	}
}
