// Package harness builds chatty's real binaries and drives them as a user
// would, for the integration tests: start chattyd with a configuration and a
// feed, talk to it over raw TCP, send it signals, listen on a systemd
// notification socket, and check its log, exit status and that no process
// is left behind.
//
// Helpers that take a testing.TB fail the test with t.Fatal, so call them
// from the test's own goroutine. Nothing here sleeps to synchronise: every
// wait is for an event (a log line, a datagram, a byte) or polls a condition
// until a deadline.
package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Binaries are the paths of the binaries built for this test process. A
// binary whose package does not exist yet has an empty path.
type Binaries struct {
	Chattyd   string // ./daemon
	Chattyctl string // ./ctl, empty until it exists
}

var build struct {
	mu   sync.Mutex // guards the fields below; held while building
	done bool
	dir  string
	bins Binaries
	err  error
}

// BuildBinaries builds ./daemon and ./ctl (when it exists) once per test
// process and returns their paths. Call Main from TestMain so that they are
// removed when the tests end.
func BuildBinaries(tb testing.TB) Binaries {
	tb.Helper()
	bins, err := Build()
	if err != nil {
		tb.Fatal(err)
	}
	return bins
}

// Build is BuildBinaries for callers without a testing.TB, such as TestMain.
// A failed build is reported to every caller, not retried.
func Build() (Binaries, error) {
	build.mu.Lock()
	defer build.mu.Unlock()
	if !build.done {
		build.done = true
		build.bins, build.err = buildAll()
	}
	return build.bins, build.err
}

// Main runs the tests and then removes the built binaries. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	build.mu.Lock()
	defer build.mu.Unlock()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	return code
}

func buildAll() (Binaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return Binaries{}, fmt.Errorf("build chatty's binaries: the go command is not in PATH: %w", err)
	}
	dir, err := os.MkdirTemp("", "chatty-itest-bin-")
	if err != nil {
		return Binaries{}, fmt.Errorf("build chatty's binaries: %w", err)
	}
	build.dir = dir

	var bins Binaries
	targets := []struct {
		pkg, name string
		path      *string
	}{
		{"daemon", "chattyd", &bins.Chattyd},
		{"ctl", "chattyctl", &bins.Chattyctl},
	}
	for _, tg := range targets {
		if gofiles, _ := filepath.Glob(filepath.Join(root, tg.pkg, "*.go")); len(gofiles) == 0 {
			if tg.pkg == "daemon" {
				return Binaries{}, fmt.Errorf("build chatty's binaries: no Go files in %s", filepath.Join(root, tg.pkg))
			}
			continue // not written yet
		}
		out := filepath.Join(dir, tg.name)
		cmd := exec.Command(gobin, "build", "-o", out, "./"+tg.pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("go build ./%s: %w\n%s", tg.pkg, err, msg)
		}
		*tg.path = out
	}
	return bins, nil
}

// ModuleRoot returns the directory of the go.mod nearest above the working
// directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("find the module root: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find the module root: no go.mod above the working directory")
		}
		dir = parent
	}
}
