package main

import (
	"bytes"

	"github.com/chatty-dev/chatty/pkg/wire"
)

// maxGaps bounds the missing ranges a tracker remembers. Beyond it the
// oldest range is forgotten: its lines stay counted as lost, and should one
// of them still arrive it is counted as a duplicate.
const maxGaps = 1024

// gap is a range [lo, hi] of seqs not received (yet).
type gap struct{ lo, hi uint64 }

// tracker checks that one subscriber receives seq 1, 2, 3, ... in order,
// each once. It is owned by one goroutine and never locks.
type tracker struct {
	next       uint64 // next seq expected in order
	received   uint64 // distinct stamped lines received
	lost       uint64 // seqs skipped and not (yet) received
	reordered  uint64 // seqs that arrived after a later seq
	duplicated uint64 // seqs received more than once
	gaps       []gap  // missing ranges, oldest first
}

func newTracker() tracker {
	return tracker{next: 1}
}

// observe accounts for one received seq.
func (t *tracker) observe(seq uint64) {
	switch {
	case seq == t.next:
		t.next++
		t.received++
	case seq > t.next:
		if len(t.gaps) == maxGaps {
			copy(t.gaps, t.gaps[1:])
			t.gaps = t.gaps[:maxGaps-1]
		}
		t.gaps = append(t.gaps, gap{t.next, seq - 1})
		t.lost += seq - t.next
		t.next = seq + 1
		t.received++
	case t.fill(seq):
		t.lost--
		t.reordered++
		t.received++
	default:
		t.duplicated++
	}
}

// fill removes seq from the missing ranges and reports whether it was there.
func (t *tracker) fill(seq uint64) bool {
	for i := len(t.gaps) - 1; i >= 0; i-- {
		g := t.gaps[i]
		if seq < g.lo || seq > g.hi {
			continue
		}
		switch {
		case g.lo == g.hi:
			t.gaps = append(t.gaps[:i], t.gaps[i+1:]...)
		case seq == g.lo:
			t.gaps[i].lo++
		case seq == g.hi:
			t.gaps[i].hi--
		default: // split in two
			t.gaps = append(t.gaps, gap{})
			copy(t.gaps[i+2:], t.gaps[i+1:])
			t.gaps[i] = gap{g.lo, seq - 1}
			t.gaps[i+1] = gap{seq + 1, g.hi}
		}
		return true
	}
	return false
}

// lostBy returns the lines lost if last is the final seq fed: the missing
// ones plus those after the last one received.
func (t *tracker) lostBy(last uint64) uint64 {
	lost := t.lost
	if t.next <= last {
		lost += last - t.next + 1
	}
	return lost
}

// stream turns the bytes a subscriber reads into accounting, latency
// samples and acks. Like tracker it belongs to one goroutine.
type stream struct {
	tracker
	other     uint64 // lines that are not stamped (probes included)
	sawProbe  bool
	ack       bool   // answer every line like a chatty worker
	acks      []byte // acks for the last consume, written in one go
	sampleMod uint64 // sample the latency of seqs divisible by sampleMod
	sampleLo  uint64 // sample only seqs in [sampleLo, sampleHi]
	sampleHi  uint64
	hist      *histogram
}

// consume processes the complete lines at the start of buf and returns how
// many bytes it used; the caller keeps the rest for the next read. sampleWin
// returns the current sampling window and now the receipt time in the
// feeder's clock; each is called at most once, and only when a line is due
// for a latency sample. With ack set, s.acks holds the acks to send.
func (s *stream) consume(buf []byte, window func() (lo, hi uint64), now func() int64) int {
	s.acks = s.acks[:0]
	var nowNanos int64
	windowRead, nowRead := false, false
	used := 0
	for {
		i := bytes.IndexByte(buf[used:], '\n')
		if i < 0 {
			return used
		}
		line := buf[used : used+i]
		used += i + 1
		if s.ack && !wire.IsKeepAliveAck(line) {
			s.acks = wire.AppendAck(s.acks, len(line))
		}
		seq, rest, ok := parseSeq(line)
		if !ok {
			s.other++
			if bytes.HasPrefix(line, []byte(probePrefix)) {
				s.sawProbe = true
			}
			continue
		}
		s.observe(seq)
		if seq%s.sampleMod != 0 {
			continue
		}
		if !windowRead {
			s.sampleLo, s.sampleHi = window()
			windowRead = true
		}
		if seq < s.sampleLo || seq > s.sampleHi {
			continue
		}
		sent, ok := parseNanos(rest)
		if !ok {
			continue
		}
		if !nowRead {
			nowNanos = now()
			nowRead = true
		}
		if d := nowNanos - sent; d >= 0 {
			s.hist.record(uint64(d))
		}
	}
}
