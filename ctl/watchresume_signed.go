package main

import (
	"fmt"
	"io"
	"net"

	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/chatty-dev/chatty/pkg/wire"
)

// signedResume is where watch --signed asks the signed listener to start
// (--from, --since, --state), and the state file it keeps: the RESUME it sends once
// the daemon's first frame has verified (after the AUTH, when the daemon
// asks for one), and the last message printed.
type signedResume struct {
	frame    []byte // the RESUME, until sent
	state    string // the state file; "" for none
	errOut   io.Writer
	pos      watchPos
	recorded uint64
}

// newSignedResume makes r's RESUME with v, which then awaits its answer;
// nil when watch was given none of --from, --since and --state.
func newSignedResume(r resume, v *signed.Verifier, errOut io.Writer) (*signedResume, error) {
	if !r.set {
		return nil, nil
	}
	q := signed.ResumeRequest{Stream: r.start.Stream}
	if q.Stream == wire.AnyStream {
		q.Stream = ""
	}
	switch r.start.From {
	case wire.FromSeq:
		q.From, q.Seq = signed.FromSeq, r.start.Seq
	case wire.FromFirst:
		q.From = signed.FromFirst
	case wire.FromNext:
		q.From = signed.FromNext
	case wire.FromSince:
		q.From, q.Since = signed.FromSince, r.start.Since
	}
	frame, err := v.Resume(q)
	if err != nil {
		return nil, err
	}
	return &signedResume{frame: frame, state: r.state, errOut: errOut}, nil
}

// send sends the RESUME once the daemon's first frame has verified: its
// ANCHOR, or its CHALLENGE answered. Before, the listener might require
// an AUTH first, which the RESUME cannot replace.
func (s *signedResume) send(conn net.Conn, v *signed.Verifier, authed bool) error {
	if s == nil || s.frame == nil {
		return nil
	}
	if _, anchored := v.Anchor(); !anchored && !authed {
		return nil
	}
	if _, err := conn.Write(s.frame); err != nil {
		return fmt.Errorf("send RESUME: %w", err)
	}
	s.frame = nil
	return nil
}

// resumed tells on errOut what the RESUMED said that the lines do not
// show: a gap, another stream.
func (s *signedResume) resumed(v *signed.Verifier) {
	r, _ := v.Resumed()
	s.pos = watchPos{stream: r.Stream, seq: r.Anchor.Seq}
	switch r.Result {
	case signed.ResumedGap:
		from, to, _ := r.Gap()
		fmt.Fprintf(s.errOut, "chattyctl: messages %d to %d are no longer retained by chattyd: %d messages missed\n", from, to, to-from+1)
	case signed.ResumedOtherStream:
		if q := r.Request; q.Stream != "" && q.Stream != r.Stream {
			fmt.Fprintf(s.errOut, "chattyctl: chattyd's stream is %s, not %s (chattyd restarted): its numbers start again; printing from its message %d on\n",
				r.Stream, q.Stream, r.Anchor.Seq+1)
		} else {
			fmt.Fprintf(s.errOut, "chattyctl: chattyd's stream %s has no message %d yet: the number is another stream's; printing from its message %d on\n",
				r.Stream, q.Seq, r.Anchor.Seq+1)
		}
	}
}

// printed records message seq as printed.
func (s *signedResume) printed(seq uint64) {
	if s != nil {
		s.pos.seq = seq
	}
}

// record writes the state file, when there is one and the position
// moved; the caller has written out what was printed.
func (s *signedResume) record() error {
	if s == nil || s.state == "" || s.pos.stream == "" || s.pos.seq == s.recorded {
		return nil
	}
	if err := writeWatchState(s.state, s.pos); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	s.recorded = s.pos.seq
	return nil
}
