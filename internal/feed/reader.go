// Package feed reads chattyd's feed: a stream of lines from stdin, a FIFO or
// any other Source, split on "\n" or "\r\n", with a bound on line length so
// that memory stays bounded whatever the input.
package feed

import (
	"bytes"
	"errors"
	"io"
)

// Handler receives accepted lines in batches, in order. The slices are only
// valid during the call; a handler that keeps a line must copy it.
type Handler interface {
	HandleLines(lines [][]byte)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(lines [][]byte)

// HandleLines calls f(lines).
func (f HandlerFunc) HandleLines(lines [][]byte) { f(lines) }

// LineReader splits a byte stream into lines of at most Max bytes. A longer
// line is dropped whole, reported to OnDrop, and reading resumes at the next
// line. Empty lines and arbitrary bytes are passed through unchanged.
type LineReader struct {
	r   io.Reader
	max int
	buf []byte

	// OnDrop, if set, is called once for every dropped over-long line with
	// the number of bytes it had (without terminator).
	OnDrop func(n int)

	start, end int  // buf[start:end] holds unconsumed bytes
	discarding bool // inside an over-long line, skipping to its end
	dropped    int  // bytes skipped of the current over-long line
	batch      [][]byte
}

// minBuffer is the smallest read buffer, so that short maximums still read
// in large blocks.
const minBuffer = 64 << 10

// NewLineReader returns a reader of lines of at most max bytes from r.
func NewLineReader(r io.Reader, max int) *LineReader {
	size := max + 2 // room for a maximal line and its "\r\n"
	if size < minBuffer {
		size = minBuffer
	}
	return &LineReader{r: r, max: max, buf: make([]byte, size)}
}

// Run reads until the stream ends or fails, handing each read's complete
// lines to h as one batch. At end of stream a final unterminated line is
// delivered too. It returns nil at end of stream, else the read error.
func (lr *LineReader) Run(h Handler) error {
	for {
		if lr.start > 0 && lr.start == lr.end {
			lr.start, lr.end = 0, 0
		}
		if lr.end == len(lr.buf) {
			// Make room: move the partial line to the front.
			copy(lr.buf, lr.buf[lr.start:lr.end])
			lr.end -= lr.start
			lr.start = 0
		}
		n, err := lr.r.Read(lr.buf[lr.end:])
		if n > 0 {
			lr.end += n
			lr.scan(h)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				lr.finish(h)
				return nil
			}
			return err
		}
	}
}

// scan delivers every complete line in the buffer.
func (lr *LineReader) scan(h Handler) {
	lr.batch = lr.batch[:0]
	for {
		data := lr.buf[lr.start:lr.end]
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		line := data[:i]
		lr.start += i + 1
		if lr.discarding {
			lr.discarding = false
			lr.drop(lr.dropped + len(line))
			continue
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > lr.max {
			lr.drop(len(line))
			continue
		}
		lr.batch = append(lr.batch, line)
	}
	if len(lr.batch) > 0 {
		h.HandleLines(lr.batch)
		clear(lr.batch) // let the buffer's bytes be overwritten freely
		lr.batch = lr.batch[:0]
	}
	// A partial line longer than any acceptable line (max plus "\r") can
	// only be dropped: skip it and remember that we are inside it.
	if pending := lr.end - lr.start; pending > lr.max+1 {
		if !lr.discarding {
			lr.discarding = true
			lr.dropped = 0
		}
		lr.dropped += pending
		lr.start, lr.end = 0, 0
	}
}

// finish handles end of stream: a final line without terminator is still
// a line.
func (lr *LineReader) finish(h Handler) {
	rest := lr.buf[lr.start:lr.end]
	lr.start, lr.end = 0, 0
	if lr.discarding {
		lr.discarding = false
		lr.drop(lr.dropped + len(rest))
		return
	}
	if len(rest) == 0 {
		return
	}
	if len(rest) > lr.max {
		lr.drop(len(rest))
		return
	}
	h.HandleLines([][]byte{rest})
}

func (lr *LineReader) drop(n int) {
	if lr.OnDrop != nil {
		lr.OnDrop(n)
	}
}
