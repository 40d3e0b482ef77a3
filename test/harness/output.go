package harness

import "sync"

// output is an append-only byte buffer that wakes waiters on every write.
// It is safe for concurrent use.
type output struct {
	mu      sync.Mutex // guards buf and changed
	buf     []byte
	changed chan struct{} // closed and replaced on every write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

// Write implements io.Writer.
func (o *output) Write(p []byte) (int, error) {
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
func (o *output) snapshot() ([]byte, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf[:len(o.buf):len(o.buf)], o.changed
}

func (o *output) String() string {
	b, _ := o.snapshot()
	return string(b)
}

// teeWriter writes to several outputs.
type teeWriter []*output

func (w teeWriter) Write(p []byte) (int, error) {
	for _, o := range w {
		o.Write(p)
	}
	return len(p), nil
}
