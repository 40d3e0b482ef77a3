package broadcast

import (
	"encoding/binary"
	"fmt"
)

// WebSocket framing (RFC 6455, section 5) for the WebSocket server: the
// server's frames, written unmasked, and the parser of the frames clients
// send, which are masked. No extension is negotiated, so no reserved bit
// may be set.

// The opcodes of RFC 6455.
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xa
)

// The close codes the server sends (RFC 6455, section 7.4.1).
const (
	wsNormal        = 1000
	wsGoingAway     = 1001
	wsProtocolError = 1002
	wsPolicy        = 1008
	wsTooBig        = 1009
	wsTryLater      = 1013
)

// wsMaxHeader is the longest header of a server frame: no mask, a 64-bit
// length.
const wsMaxHeader = 10

// appendWSHeader appends the header of an unfragmented server frame of
// opcode carrying n bytes.
func appendWSHeader(dst []byte, opcode byte, n int) []byte {
	dst = append(dst, 0x80|opcode)
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
	}
}

// appendWSFrame appends an unfragmented server frame.
func appendWSFrame(dst []byte, opcode byte, payload []byte) []byte {
	return append(appendWSHeader(dst, opcode, len(payload)), payload...)
}

// wsCloseFrame returns a close frame with code and reason, the reason
// cut to what a control frame holds (125 bytes with the code).
func wsCloseFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return appendWSFrame(nil, wsClose, append(p, reason...))
}

// wsFrame is one frame a client sent, its payload unmasked.
type wsFrame struct {
	fin     bool
	opcode  byte
	payload []byte // in the caller's buffer
}

// wsError is a client's violation of the protocol: the connection is
// closed with code and reason.
type wsError struct {
	code   int
	reason string
}

func (e *wsError) Error() string { return fmt.Sprintf("websocket close %d: %s", e.code, e.reason) }

// parseWSFrame parses the client frame at the start of p, unmasking its
// payload in place. It returns the frame and the bytes it takes, 0 when
// p holds only part of it, or the violation: an unmasked frame, a
// reserved bit or opcode, a fragmented or long control frame, or a
// payload over maxPayload, refused as soon as its header is read.
func parseWSFrame(p []byte, maxPayload int) (f wsFrame, n int, err error) {
	if len(p) < 2 {
		return f, 0, nil
	}
	b0, b1 := p[0], p[1]
	f.fin, f.opcode = b0&0x80 != 0, b0&0x0f
	if b0&0x70 != 0 {
		return f, 0, &wsError{wsProtocolError, "reserved bits set; no extension was negotiated"}
	}
	switch f.opcode {
	case wsContinuation, wsText, wsBinary, wsClose, wsPing, wsPong:
	default:
		return f, 0, &wsError{wsProtocolError, fmt.Sprintf("unknown opcode %d", f.opcode)}
	}
	if b1&0x80 == 0 {
		return f, 0, &wsError{wsProtocolError, "client frames must be masked"}
	}
	size, hdr := uint64(b1&0x7f), 2
	switch size {
	case 126:
		if len(p) < 4 {
			return f, 0, nil
		}
		size, hdr = uint64(binary.BigEndian.Uint16(p[2:])), 4
	case 127:
		if len(p) < 10 {
			return f, 0, nil
		}
		size, hdr = binary.BigEndian.Uint64(p[2:]), 10
		if size>>63 != 0 {
			return f, 0, &wsError{wsProtocolError, "payload length has its top bit set"}
		}
	}
	if f.opcode&0x8 != 0 && (!f.fin || size > 125) {
		return f, 0, &wsError{wsProtocolError, "control frames must be whole and at most 125 bytes"}
	}
	if size > uint64(maxPayload) {
		return f, 0, &wsError{wsTooBig, fmt.Sprintf("message too big: at most %d bytes", maxPayload)}
	}
	need := hdr + 4 + int(size)
	if len(p) < need {
		return f, 0, nil
	}
	mask := p[hdr : hdr+4]
	f.payload = p[hdr+4 : need]
	for i := range f.payload {
		f.payload[i] ^= mask[i&3]
	}
	return f, need, nil
}

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455, section 7.4).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
