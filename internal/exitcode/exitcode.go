// Package exitcode holds the exit codes that chattyd and chattyctl share,
// and the one way both turn a command's error into one: 0 for success, 1
// for a failure, 2 for a command line that cannot be right.
package exitcode

import (
	"errors"
	"fmt"
	"io"
)

// The exit codes.
const (
	OK      = 0
	Failure = 1
	Usage   = 2
)

// UsageError is a command line that cannot be right: exit code 2.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf(format, args...)}
}

// ErrReported is a failure already reported (logged) in full: exit code 1
// with nothing more printed.
var ErrReported = errors.New("failed; see the log above")

// coder is an error that carries its own exit code, such as a worker's
// (urfave/cli's ExitCoder).
type coder interface{ ExitCode() int }

// Code returns the exit code for a command's error.
func Code(err error) int {
	var ue *UsageError
	var c coder
	switch {
	case err == nil:
		return OK
	case errors.As(err, &ue):
		return Usage
	case errors.As(err, &c):
		return c.ExitCode()
	}
	return Failure
}

// Report prints err to w as "prog: message", unless it was already
// reported or has no message, and returns its exit code.
func Report(w io.Writer, prog string, err error) int {
	if err != nil && !errors.Is(err, ErrReported) && err.Error() != "" {
		fmt.Fprintf(w, "%s: %v\n", prog, err)
	}
	return Code(err)
}
