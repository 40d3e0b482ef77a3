package main

// A minimal client of the NATS text protocol, enough to compare chattyd
// with nats-server using the same feeder, subscribers and accounting: the
// feed's lines are published on one subject, every subscriber subscribes to
// it, and each received message is handed to the subscriber as "payload\n",
// exactly like a chattyd line. Acks, when asked for, are published on a
// subject nobody subscribes to, so that the server parses and routes every
// one, as chattyd matches every ack. Hand-written (about 200 lines of the
// stdlib) rather than nats.go, so that both sides of the comparison use the
// same reading loop and the tool keeps no dependencies.
//
// Protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol):
// server "INFO {...}\r\n" on connect; client "CONNECT {...}\r\n",
// "SUB <subject> <sid>\r\n", "PUB <subject> <n>\r\n<payload>\r\n"; server
// "MSG <subject> <sid> [reply] <n>\r\n<payload>\r\n"; "PING\r\n" is
// answered "PONG\r\n"; "+OK", "PONG" and "INFO" are ignored; "-ERR" fails.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

const (
	natsSubject    = "chatty"
	natsAckSubject = "chatty.acks"
	natsConnect    = "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"chattyload\"}\r\n"
)

// appendPub appends one PUB message carrying payload to b.
func appendPub(b []byte, subject string, payload []byte) []byte {
	b = append(b, "PUB "...)
	b = append(b, subject...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, "\r\n"...)
	b = append(b, payload...)
	return append(b, "\r\n"...)
}

// appendPubLines appends a PUB for each "\n"-terminated line of p.
func appendPubLines(b []byte, subject string, p []byte) []byte {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			i = len(p) // not expected: the tool writes whole lines
		}
		b = appendPub(b, subject, p[:i])
		p = p[min(i+1, len(p)):]
	}
	return b
}

// natsPublisher is the feeder's connection to nats-server: every line
// written becomes one PUB. Its reader answers the server's PINGs.
type natsPublisher struct {
	conn *net.TCPConn
	mu   sync.Mutex // serialises writes; guards buf
	buf  []byte
}

func newNatsPublisher(c *net.TCPConn) (*natsPublisher, error) {
	p := &natsPublisher{conn: c}
	if _, err := c.Write([]byte(natsConnect)); err != nil {
		return nil, fmt.Errorf("nats CONNECT: %w", err)
	}
	return p, nil
}

// Write implements feedWriter.
func (p *natsPublisher) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = appendPubLines(p.buf[:0], natsSubject, b)
	if _, err := p.conn.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

// SetWriteDeadline implements feedWriter.
func (p *natsPublisher) SetWriteDeadline(t time.Time) error { return p.conn.SetWriteDeadline(t) }

// readLoop reads what the server sends the publisher until the connection
// ends, answering PING; it returns the first -ERR.
func (p *natsPublisher) readLoop() error {
	r := natsReader{r: p.conn, pong: func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, err := p.conn.Write([]byte("PONG\r\n"))
		return err
	}}
	buf := make([]byte, 4096)
	for {
		if _, err := r.Read(buf); err != nil {
			return err
		}
	}
}

// natsSubConn is a subscriber's connection: Read returns the payloads of
// the subject's messages as "payload\n", Write publishes each ack line.
type natsSubConn struct {
	*net.TCPConn
	r    natsReader
	wbuf []byte
}

// dialNatsSub subscribes c to the feed's subject.
func dialNatsSub(c *net.TCPConn) (*natsSubConn, error) {
	s := &natsSubConn{TCPConn: c}
	s.r = natsReader{r: c, pong: func() error {
		_, err := c.Write([]byte("PONG\r\n")) // from the reading goroutine, which also writes acks
		return err
	}}
	if _, err := c.Write([]byte(natsConnect + "SUB " + natsSubject + " 1\r\n")); err != nil {
		return nil, fmt.Errorf("nats SUB: %w", err)
	}
	return s, nil
}

// Read implements net.Conn.
func (s *natsSubConn) Read(p []byte) (int, error) { return s.r.Read(p) }

// Write implements net.Conn: p holds ack lines.
func (s *natsSubConn) Write(p []byte) (int, error) {
	s.wbuf = appendPubLines(s.wbuf[:0], natsAckSubject, p)
	if _, err := s.TCPConn.Write(s.wbuf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// natsReader decodes the server's side of the protocol.
type natsReader struct {
	r      io.Reader
	pong   func() error
	raw    []byte
	rs, re int // unparsed bytes are raw[rs:re]
}

var errNatsPayload = errors.New("nats message larger than the read buffer")

// Read fills p with "payload\n" for each whole MSG, reading the connection
// as needed; it returns at least one payload or an error.
func (n *natsReader) Read(p []byte) (int, error) {
	if n.raw == nil {
		n.raw = make([]byte, 256<<10)
	}
	out := 0
	for {
		for n.rs < n.re {
			data := n.raw[n.rs:n.re]
			eol := bytes.Index(data, []byte("\r\n"))
			if eol < 0 {
				break
			}
			ctl := data[:eol]
			switch {
			case bytes.HasPrefix(ctl, []byte("MSG ")):
				f := bytes.Fields(ctl)
				if len(f) < 4 {
					return out, fmt.Errorf("nats: bad MSG line %q", ctl)
				}
				size, err := strconv.Atoi(string(f[len(f)-1]))
				if err != nil || size < 0 {
					return out, fmt.Errorf("nats: bad MSG size in %q", ctl)
				}
				total := eol + 2 + size + 2
				if total > len(n.raw) {
					return out, errNatsPayload
				}
				if len(data) < total {
					goto more // the payload is not all here yet
				}
				if out+size+1 > len(p) {
					if out == 0 {
						return 0, errNatsPayload
					}
					return out, nil
				}
				out += copy(p[out:], data[eol+2:eol+2+size])
				p[out] = '\n'
				out++
				n.rs += total
				continue
			case bytes.Equal(ctl, []byte("PING")):
				if err := n.pong(); err != nil {
					return out, err
				}
			case bytes.HasPrefix(ctl, []byte("-ERR")):
				return out, fmt.Errorf("nats-server: %s", ctl)
			}
			n.rs += eol + 2 // INFO, +OK, PONG
		}
	more:
		if out > 0 {
			return out, nil
		}
		if n.rs > 0 {
			n.re = copy(n.raw, n.raw[n.rs:n.re])
			n.rs = 0
		}
		if n.re == len(n.raw) {
			return 0, errNatsPayload
		}
		k, err := n.r.Read(n.raw[n.re:])
		n.re += k
		if err != nil && k == 0 {
			return 0, err
		}
	}
}
