package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// feed writes rate lines a second to w until ctx is done and returns how
// many it wrote. Line seq is "<seq> <padding>", 20 to 99 bytes long so
// that an ack paired with the wrong line is mismatched.
func feed(ctx context.Context, w io.Writer, rate int) int {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	seq := 0
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return seq
		case <-t.C:
		}
		due := int(time.Since(start).Seconds() * float64(rate))
		buf = buf[:0]
		for seq < due {
			seq++
			buf = appendLine(buf, seq)
		}
		if _, err := w.Write(buf); err != nil {
			return seq
		}
	}
}

func appendLine(b []byte, seq int) []byte {
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ' ')
	for range 12 + seq%80 {
		b = append(b, 'p')
	}
	return append(b, '\n')
}

// subscriber is an external client that checks the order of the feed and
// acknowledges every line, as chatty's workers do.
type subscriber struct {
	conn                                 *net.TCPConn
	last                                 atomic.Uint64 // highest feed seq received
	lines, lost, reordered, dup, unknown atomic.Uint64
	sent                                 atomic.Uint64 // chattyctl messages
	err                                  atomic.Pointer[error]
	keepAlivesSent, keepAlivesAnswered   atomic.Uint64
	stopKeepAlive                        chan struct{}
	writeMu                              sync.Mutex // serialises writes
}

func dialSubscriber(addr string) (*subscriber, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &subscriber{conn: c.(*net.TCPConn), stopKeepAlive: make(chan struct{})}, nil
}

func (s *subscriber) write(b []byte) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := s.conn.Write(b)
	return err
}

var sentRE = regexp.MustCompile(`^\S+Z \[Info\] soak message \d+$`)

// run reads until the connection is closed.
func (s *subscriber) run() {
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.stopKeepAlive:
				return
			case <-t.C:
				s.keepAlivesSent.Add(1)
				if s.write([]byte("KEEP_ALIVE\n")) != nil {
					return
				}
			}
		}
	}()
	defer close(s.stopKeepAlive)
	br := bufio.NewReaderSize(s.conn, 256<<10)
	var acks []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				s.err.Store(&err)
			}
			return
		}
		line = line[:len(line)-1]
		switch {
		case string(line) == "KEEP_ALIVE_ACK":
			s.keepAlivesAnswered.Add(1)
			continue
		case sentRE.Match(line):
			s.sent.Add(1)
		default:
			sp := bytes.IndexByte(line, ' ')
			var seq uint64
			var err error
			if sp > 0 {
				seq, err = strconv.ParseUint(string(line[:sp]), 10, 64)
			}
			if sp <= 0 || err != nil || len(line) != sp+1+12+int(seq%80) {
				s.unknown.Add(1)
				break
			}
			s.lines.Add(1)
			switch last := s.last.Load(); {
			case seq == last+1:
				s.last.Store(seq)
			case seq > last+1:
				s.lost.Add(seq - last - 1)
				s.last.Store(seq)
			case seq <= last:
				s.reordered.Add(1)
			}
		}
		// Every line is acknowledged; the acks of one read go in one write.
		acks = append(acks, "ACK_RECEIVED "...)
		acks = strconv.AppendInt(acks, int64(len(line)), 10)
		acks = append(acks, '\n')
		if br.Buffered() == 0 {
			if err := s.write(acks); err != nil {
				return
			}
			acks = acks[:0]
		}
	}
}

func deliveries(subs []*subscriber) uint64 {
	var n uint64
	for _, s := range subs {
		n += s.lines.Load()
	}
	return n
}

var closedRE = regexp.MustCompile(`Connection closed .*acks_mismatched=(\d+)`)

// scanLog counts what the report needs in chattyd's log, once it exited.
func scanLog(logPath string, r *Report) {
	f, err := os.Open(logPath)
	if err != nil {
		r.problem("read the log: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "] Process terminated ("):
			r.Terminated++
		case strings.Contains(line, "] Process stopped ("):
			r.Stopped++
		case strings.Contains(line, "Cannot start the worker"):
			r.StartFailures++
		case strings.Contains(line, "panic") || strings.Contains(line, "DATA RACE"):
			r.problem("chattyd's log: %s", line)
		}
		if m := closedRE.FindStringSubmatch(line); m != nil && m[1] != "0" {
			r.MismatchedCloses++
		}
	}
}
