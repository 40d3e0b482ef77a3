// Package wire defines chatty's text line protocol, byte for byte the one
// of the original OCaml chatty server; docs/protocol.md, "chatty's line
// protocol", is its reference.
package wire

import (
	"bytes"
	"strconv"
)

// The control words of the text protocol.
const (
	KeepAlive    = "KEEP_ALIVE"
	KeepAliveAck = "KEEP_ALIVE_ACK"
	AckPrefix    = "ACK_RECEIVED "
)

// Kind says what a client line is.
type Kind int

// The kinds of client line.
const (
	Other         Kind = iota // anything else: logged, otherwise ignored
	Ack                       // ACK_RECEIVED <n>
	KeepAliveLine             // KEEP_ALIVE
)

func (k Kind) String() string {
	switch k {
	case Ack:
		return "ack"
	case KeepAliveLine:
		return "keep-alive"
	}
	return "other"
}

// maxAckDigits bounds the number in an ack; no line is that long.
const maxAckDigits = 18

// ParseClientLine classifies one client line (terminator already removed,
// though a trailing "\r" is tolerated). For an Ack it also returns n.
// It never panics and never allocates.
func ParseClientLine(line []byte) (Kind, int64) {
	line = TrimCR(line)
	if string(line) == KeepAlive {
		return KeepAliveLine, 0
	}
	rest, ok := bytes.CutPrefix(line, []byte(AckPrefix))
	if !ok || len(rest) == 0 || len(rest) > maxAckDigits {
		return Other, 0
	}
	var n int64
	for _, c := range rest {
		if c < '0' || c > '9' {
			return Other, 0
		}
		n = n*10 + int64(c-'0')
	}
	return Ack, n
}

// TrimCR removes one trailing "\r", left by a "\r\n" terminator.
func TrimCR(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		return line[:n-1]
	}
	return line
}

// AppendAck appends "ACK_RECEIVED <n>\n" to b.
func AppendAck(b []byte, n int) []byte {
	b = append(b, AckPrefix...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\n')
}

// IsKeepAliveAck reports whether a received line is exactly the server's
// keep-alive answer, which a worker must not acknowledge.
func IsKeepAliveAck(line []byte) bool {
	return string(TrimCR(line)) == KeepAliveAck
}
