package main

// The chattyd-ws target: chattyd's WebSocket listener (docs/protocol.md,
// "WebSocket"). The tool writes chattyd's configuration with the listener
// on a free 127.0.0.1 port; the feeder writes to chattyd's stdin as for
// the text target, and each subscriber does the opening handshake itself,
// then turns every message into a line, "payload\n", for the same
// accounting as a text line.

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// wsSetup is what the tool prepared for a chattyd-ws run.
type wsSetup struct {
	dir    string // temporary: the configuration
	config string // chattyd --config FILE
	addr   string // broadcast.websocket.listen
}

// prepareWS writes a configuration with a WebSocket listener on a free
// port. The caller removes s.dir.
func prepareWS() (*wsSetup, error) {
	dir, err := os.MkdirTemp("", "chattyload-ws-")
	if err != nil {
		return nil, fmt.Errorf("websocket target: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &wsSetup{dir: dir, config: filepath.Join(dir, "chattyd.yaml"), addr: addr}
	yaml := fmt.Sprintf("version: 1\nbroadcast:\n  websocket:\n    listen: %q\n", addr)
	if err := os.WriteFile(s.config, []byte(yaml), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("websocket target: %w", err)
	}
	return s, nil
}

// wsGUID is RFC 6455's key suffix.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsHandshake upgrades c to a WebSocket on /v1/feed and returns the
// subscriber's connection, which keeps what was read past the response.
func wsHandshake(c net.Conn, bufSize int) (net.Conn, error) {
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	req := "GET /v1/feed HTTP/1.1\r\nHost: " + c.RemoteAddr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	br := bufio.NewReaderSize(c, bufSize)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	resp.Body.Close()
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	return &wsSubConn{Conn: c, br: br, raw: make([]byte, bufSize)}, nil
}

// wsSubConn is a subscriber's WebSocket. Read returns the payload of each
// data message as a line; a ping is answered with a pong, a close frame
// ends the stream.
type wsSubConn struct {
	net.Conn
	br       *bufio.Reader
	raw      []byte
	start    int
	end      int
	leftover []byte // lines not yet returned
	err      error
}

var errWSClosed = errors.New("websocket closed by the server")

func (w *wsSubConn) Read(p []byte) (int, error) {
	for {
		if len(w.leftover) > 0 {
			n := copy(p, w.leftover)
			w.leftover = w.leftover[n:]
			return n, nil
		}
		if n := w.decode(p); n > 0 {
			return n, nil
		}
		if w.err != nil {
			return 0, w.err
		}
		if w.start > 0 {
			w.end = copy(w.raw, w.raw[w.start:w.end])
			w.start = 0
		}
		if w.end == len(w.raw) {
			return 0, errLineTooLong
		}
		n, err := w.br.Read(w.raw[w.end:])
		w.end += n
		if err != nil && n == 0 {
			return 0, err
		}
	}
}

// decode turns the whole frames buffered into lines in p and returns
// their bytes.
func (w *wsSubConn) decode(p []byte) int {
	out := 0
	for w.err == nil {
		b := w.raw[w.start:w.end]
		if len(b) < 2 {
			break
		}
		size, hdr := int(b[1]&0x7f), 2
		switch size {
		case 126:
			if len(b) < 4 {
				return out
			}
			size, hdr = int(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				return out
			}
			size, hdr = int(binary.BigEndian.Uint64(b[2:])), 10
		}
		if len(b) < hdr+size {
			break
		}
		payload := b[hdr : hdr+size]
		switch b[0] & 0x0f {
		case 0x1, 0x2:
			if out+size+1 > len(p) {
				if out > 0 {
					return out
				}
				w.leftover = append(append(w.leftover[:0], payload...), '\n')
				w.start += hdr + size
				return 0
			}
			out += copy(p[out:], payload)
			p[out] = '\n'
			out++
		case 0x9: // ping: a masked pong with a zero mask
			pong := append([]byte{0x8a, 0x80 | byte(size), 0, 0, 0, 0}, payload...)
			if _, err := w.Conn.Write(pong); err != nil {
				w.err = err
			}
		case 0x8:
			w.err = errWSClosed
		}
		w.start += hdr + size
	}
	return out
}
