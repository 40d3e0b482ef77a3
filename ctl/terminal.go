package main

import (
	"bytes"
	"io"
	"os"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/chatty-dev/chatty/pkg/message"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return isTerminalFD(int(f.Fd()))
}

// isTerminalFD reports whether fd is a terminal.
func isTerminalFD(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// escapingWriter writes to a terminal what it is given with its control
// characters escaped (message.AppendEscaped: "\x1b", "\u009b"), line feeds
// and tabs kept, so that the lines it shows cannot retitle, clear or
// otherwise drive the terminal. A UTF-8 sequence cut by the end of a write
// is held until the next one; Flush writes what is held.
type escapingWriter struct {
	w    io.Writer
	held []byte // the start of a UTF-8 sequence the last write ended in
	buf  []byte
}

// Write implements io.Writer. It reports len(p) when the escaped bytes
// were all written.
func (e *escapingWriter) Write(p []byte) (int, error) {
	data := p
	if len(e.held) > 0 {
		data = append(e.held, p...)
		e.held = nil
	}
	if i := cutRune(data); i < len(data) {
		e.held = append([]byte(nil), data[i:]...)
		data = data[:i]
	}
	e.buf = e.buf[:0]
	for len(data) > 0 {
		line, rest, found := bytes.Cut(data, []byte{'\n'})
		e.buf = message.AppendEscaped(e.buf, line)
		if found {
			e.buf = append(e.buf, '\n')
		}
		data = rest
	}
	if _, err := e.w.Write(e.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes, escaped, the bytes held from the last write.
func (e *escapingWriter) Flush() error {
	if len(e.held) == 0 {
		return nil
	}
	b := message.AppendEscaped(nil, e.held)
	e.held = nil
	_, err := e.w.Write(b)
	return err
}

// cutRune returns where an incomplete UTF-8 sequence at the end of p
// starts, or len(p) if p does not end in one.
func cutRune(p []byte) int {
	for i := len(p) - 1; i >= 0 && i > len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				return i
			}
			break
		}
	}
	return len(p)
}
