package harness

import "sync"

// Output is an append-only byte buffer that wakes waiters on every write:
// a process's output or a log, written by one goroutine and read by
// others. It is safe for concurrent use.
type Output struct {
	mu      sync.Mutex // guards buf and changed
	buf     []byte
	changed chan struct{} // closed and replaced on every write
}

// NewOutput returns an empty Output.
func NewOutput() *Output { return &Output{changed: make(chan struct{})} }

// Write implements io.Writer.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

// snapshot returns what was written so far, which must not be modified,
// and a channel closed at the next write. Written bytes are never changed,
// so the slice stays valid while writing goes on.
func (o *Output) snapshot() ([]byte, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf[:len(o.buf):len(o.buf)], o.changed
}

// String returns what was written so far.
func (o *Output) String() string {
	b, _ := o.snapshot()
	return string(b)
}

// teeWriter writes to several outputs.
type teeWriter []*Output

func (w teeWriter) Write(p []byte) (int, error) {
	for _, o := range w {
		o.Write(p)
	}
	return len(p), nil
}
