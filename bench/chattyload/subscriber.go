package main

import (
	"errors"
	"net"
	"sync/atomic"
)

// subscriber is one client connection. Its goroutine (read) owns the
// stream; the coordinator only reads the atomics until read has returned.
type subscriber struct {
	id   int
	conn net.Conn
	buf  []byte
	st   stream

	received atomic.Uint64 // st.received, published after every read
	next     atomic.Uint64 // st.next, published after every read
	probed   atomic.Bool   // st.sawProbe
	ended    atomic.Bool   // read has returned
	err      error         // why read returned early; valid once ended
}

// errLineTooLong means a line did not fit the read buffer.
var errLineTooLong = errors.New("line longer than the read buffer")

// read receives until the connection fails or is closed. closing reports
// whether the coordinator closed it, in which case the error is not one.
func (s *subscriber) read(closing *atomic.Bool, window func() (lo, hi uint64), now func() int64) {
	defer s.ended.Store(true)
	filled := 0
	for {
		n, err := s.conn.Read(s.buf[filled:])
		if n > 0 {
			filled += n
			used := s.st.consume(s.buf[:filled], window, now)
			filled = copy(s.buf, s.buf[used:filled])
			s.received.Store(s.st.received)
			s.next.Store(s.st.next)
			if s.st.sawProbe && !s.probed.Load() {
				s.probed.Store(true)
			}
			if len(s.st.acks) > 0 {
				if _, werr := s.conn.Write(s.st.acks); werr != nil && err == nil {
					err = werr
				}
			}
			if filled == len(s.buf) && err == nil {
				err = errLineTooLong
			}
		}
		if err != nil {
			if !closing.Load() {
				s.err = err
			}
			return
		}
	}
}
