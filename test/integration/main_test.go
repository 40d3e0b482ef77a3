// Package integration runs the real chattyd binary and checks what a user
// sees: bytes on TCP connections, the log, exit statuses, systemd
// notifications and the files it creates.
package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// Generous deadlines: the tests run with -race on small machines.
const (
	short = 5 * time.Second  // anything that should take milliseconds
	long  = 20 * time.Second // bulk transfers of megabytes
)

// config returns a configuration file: version 1, no workers, and body
// (more top-level sections, but not pool).
func config(body string) string {
	return "version: 1\npool:\n  size: 0\n" + body
}

// numbered returns n feed lines "<prefix> 000001 ..." from first on, each
// padded with filler to width bytes when width is larger.
func numbered(prefix string, first, n, width int) []string {
	lines := make([]string, n)
	for i := range lines {
		l := fmt.Sprintf("%s %08d", prefix, first+i)
		if pad := width - len(l) - 1; pad > 0 {
			l += " " + strings.Repeat("x", pad)
		}
		lines[i] = l
	}
	return lines
}

// joinLines is what a client receives for lines: each followed by "\n".
func joinLines(lines []string) []byte {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// diffLines describes the first difference between got and want, or "".
func diffLines(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("line %d: got %.80q, want %.80q", i+1, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("got %d lines, want %d", len(got), len(want))
	}
	return ""
}
