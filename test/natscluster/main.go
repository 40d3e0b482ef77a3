package natscluster

import (
	"fmt"
	"os"
	"sync"
)

// Main is a T for programs: Fatal ends the program after running the
// clean-ups, which Close runs too.
type Main struct {
	mu       sync.Mutex // guards the fields below
	dirs     []string
	cleanups []func()
	failed   bool
}

func (m *Main) Helper() {}

func (m *Main) Fatal(args ...any) { m.Errorf("%s", fmt.Sprint(args...)); m.Close(); os.Exit(1) }

func (m *Main) Fatalf(format string, args ...any) {
	m.Errorf(format, args...)
	m.Close()
	os.Exit(1)
}

func (m *Main) Errorf(format string, args ...any) {
	m.mu.Lock()
	m.failed = true
	m.mu.Unlock()
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (m *Main) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (m *Main) TempDir() string {
	d, err := os.MkdirTemp("", "natscluster")
	if err != nil {
		m.Fatal(err)
	}
	m.mu.Lock()
	m.dirs = append(m.dirs, d)
	m.mu.Unlock()
	return d
}

func (m *Main) Cleanup(f func()) { m.mu.Lock(); m.cleanups = append(m.cleanups, f); m.mu.Unlock() }

func (m *Main) Failed() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.failed }

// Close runs the clean-ups, the last registered first, and removes the
// temporary directories.
func (m *Main) Close() {
	m.mu.Lock()
	cs, ds := m.cleanups, m.dirs
	m.cleanups, m.dirs = nil, nil
	m.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	for _, d := range ds {
		os.RemoveAll(d)
	}
}
