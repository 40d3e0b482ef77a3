package worker

import (
	"bytes"
	"fmt"

	"github.com/chatty-dev/chatty/pkg/wire"
)

// MaxLineBytes is the longest line, terminator excluded, that a worker
// accepts from the server. A longer line ends the worker with ExitRestart.
// Lines are counted, not buffered, so memory does not depend on it.
const MaxLineBytes = 1 << 20

// headLen is how much of a line acker keeps to recognise KEEP_ALIVE_ACK,
// with room for the "\r" of a "\r\n" terminator.
const headLen = len(wire.KeepAliveAck) + 1

// acker turns the byte stream received from the server into acks. It keeps
// no line content beyond the first headLen bytes of an unfinished line, so
// a line may be split across reads at any position.
type acker struct {
	max int // longest accepted line, terminator excluded

	n    int           // bytes of the unfinished line so far
	head [headLen]byte // first bytes of the unfinished line
	last byte          // last byte of the unfinished line, to spot "\r"
}

// feed appends "ACK_RECEIVED <n>\n" to dst for every line completed in p,
// except KEEP_ALIVE_ACK lines, which it counts in keepAliveAcks. It returns
// the extended dst. On a line longer than a.max it returns an error that
// wraps ErrLineTooLong; dst then holds the acks of the lines before it.
func (a *acker) feed(dst, p []byte) (out []byte, keepAliveAcks int, err error) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			a.add(p)
			// A trailing "\r" may yet turn out to be part of the terminator.
			if n := a.n; n > a.max && (n-1 > a.max || a.last != '\r') {
				return dst, keepAliveAcks, fmt.Errorf("%w of %d bytes", ErrLineTooLong, a.max)
			}
			return dst, keepAliveAcks, nil
		}
		var n int
		var isAck bool
		if a.n == 0 {
			// The common case: the whole line is in p.
			line := p[:i]
			n = len(wire.TrimCR(line))
			isAck = n == len(wire.KeepAliveAck) && wire.IsKeepAliveAck(line)
		} else {
			a.add(p[:i])
			n = a.n
			if a.last == '\r' {
				n--
			}
			isAck = n == len(wire.KeepAliveAck) && wire.IsKeepAliveAck(a.head[:min(a.n, headLen)])
			a.n, a.last = 0, 0
		}
		p = p[i+1:]
		if n > a.max {
			return dst, keepAliveAcks, fmt.Errorf("%w of %d bytes", ErrLineTooLong, a.max)
		}
		if isAck {
			keepAliveAcks++
			continue
		}
		dst = wire.AppendAck(dst, n)
	}
	return dst, keepAliveAcks, nil
}

// add records part of an unfinished line.
func (a *acker) add(p []byte) {
	if len(p) == 0 {
		return
	}
	if a.n < headLen {
		copy(a.head[a.n:], p)
	}
	a.n += len(p)
	a.last = p[len(p)-1]
}
