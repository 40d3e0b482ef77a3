package main

import (
	"testing"

	"github.com/chatty-dev/chatty/internal/manpage/mantest"
)

// TestManPage checks chattyd's manual page: a synopsis with the daemon's
// flags and their arguments and every command, that man renders without
// a warning.
func TestManPage(t *testing.T) {
	code, page, errOut := runChattyd(t, "man")
	if code != 0 {
		t.Fatalf("man: exit %d: %s", code, errOut)
	}
	mantest.Check(t, page, []string{"chattyd [--config FILE] [--demo] [--listen HOST:PORT]", "[--control-socket PATH]",
		" check-config [OPTIONS] [FILE]", " print-config ", " keygen ", " worker ", " demo-feed "}, nil)
}
