package exitcode

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestCodeAndReport(t *testing.T) {
	cases := []struct {
		name string
		err  error
		code int
		out  string
	}{
		{"success", nil, OK, ""},
		{"failure", errors.New("disk full"), Failure, "prog: disk full\n"},
		{"usage", Usagef("bad flag %q", "-x"), Usage, "prog: bad flag \"-x\"\n"},
		{"wrapped usage", fmt.Errorf("run: %w", Usagef("no command")), Usage, "prog: run: no command\n"},
		{"reported", ErrReported, Failure, ""},
		{"wrapped reported", fmt.Errorf("start: %w", ErrReported), Failure, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if got := Report(&buf, "prog", tc.err); got != tc.code {
				t.Errorf("code = %d, want %d", got, tc.code)
			}
			if buf.String() != tc.out {
				t.Errorf("printed %q, want %q", buf.String(), tc.out)
			}
		})
	}
}

type withCode int

func (c withCode) Error() string { return "" }
func (c withCode) ExitCode() int { return int(c) }

// An error with its own code keeps it, and one without a message prints
// nothing: a worker's restart code passes through unchanged.
func TestOwnCode(t *testing.T) {
	var buf bytes.Buffer
	if got := Report(&buf, "prog", withCode(3)); got != 3 || buf.Len() != 0 {
		t.Errorf("Report = %d, printed %q; want 3 and nothing", got, buf.String())
	}
}
