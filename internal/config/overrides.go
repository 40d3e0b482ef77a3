package config

import (
	"fmt"
	"net"
	"strconv"
)

// Overrides are settings given on chattyd's command line, which take the
// place of the file's. A nil field was not given.
type Overrides struct {
	Listen        *string // broadcast.listen (--listen)
	IP            *string // the host of broadcast.listen, keeping its port (--ip)
	Port          *int    // the port of broadcast.listen, keeping its host (--port)
	Workers       *int    // pool.size (--workers)
	Verbose       bool    // log.level: debug (--verbose)
	LogFormat     *string // log.format (--log-format)
	ControlSocket *string // control.socket (--control-socket)
}

// OverridesFile is the Error.File of the invalid settings Apply reports.
const OverridesFile = "command-line flags"

// UsageError is an override that is wrong whatever the configuration:
// an IP that is no IP address, a port that is no port number.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// Apply sets the overrides over c and validates the result. On error it
// changes nothing and returns a *UsageError for a bad IP or Port, an
// *Error (for OverridesFile) listing every invalid setting, or an error
// when IP or Port are given but broadcast.listen has no port.
func (c *Config) Apply(o Overrides) error {
	next := *c
	if o.Listen != nil {
		next.Broadcast.Listen = *o.Listen
	}
	if o.IP != nil || o.Port != nil {
		host, port, err := net.SplitHostPort(next.Broadcast.Listen)
		if err != nil {
			return fmt.Errorf("--ip/--port: the address %q has no port to combine with: %w", next.Broadcast.Listen, err)
		}
		if o.IP != nil {
			if net.ParseIP(*o.IP) == nil {
				return &UsageError{fmt.Sprintf("--ip %q is not an IP address", *o.IP)}
			}
			host = *o.IP
		}
		if o.Port != nil {
			if p := *o.Port; p < 0 || p > 65535 {
				return &UsageError{fmt.Sprintf("--port %d is not a port number (0 to 65535)", p)}
			}
			port = strconv.Itoa(*o.Port)
		}
		next.Broadcast.Listen = net.JoinHostPort(host, port)
	}
	if o.Workers != nil {
		next.Pool.Size = *o.Workers
	}
	if o.Verbose {
		next.Log.Level = LevelDebug
	}
	badFormat := false
	if o.LogFormat != nil {
		// A bad name leaves the format invalid, for Validate to report
		// in its place.
		var ok bool
		next.Log.Format, ok = logFormats.parse(*o.LogFormat)
		badFormat = !ok
	}
	if o.ControlSocket != nil {
		next.Control.Socket = *o.ControlSocket
	}
	if ps := next.Validate(); len(ps) > 0 {
		for i, p := range ps {
			if p.Field == "log.format" && badFormat {
				ps[i].Msg = logFormats.problem(*o.LogFormat)
			}
		}
		return &Error{File: OverridesFile, Problems: ps}
	}
	*c = next
	return nil
}
