package main

import "strconv"

// A stamped line is "<seq> <nanos> <padding>": seq counts up from 1 over the
// whole run, nanos is the feeder's monotonic clock (nanoseconds since the
// tool's epoch) when the line was written, and the padding of 'x' brings the
// line to the requested size (the "\n" terminator not included). The feeder
// and the subscribers live in one process, so receipt time minus nanos is
// the delivery latency on one clock.
//
// A probe line is "PROBE <n>": the feeder sends probes before the first
// stamped line, until every subscriber has seen one, which proves that the
// server has registered every subscriber.

// probePrefix starts a probe line.
const probePrefix = "PROBE "

// minLineSize is the smallest -size that holds a stamp with room to spare:
// 20 digits of seq, a space, 19 digits of nanos, a space and some padding.
const minLineSize = 48

// maxLineSize is the largest line chattyd accepts (longer ones are dropped).
const maxLineSize = 64 << 10

// padding is sliced to pad lines; it is as long as the longest line.
var padding = func() []byte {
	b := make([]byte, maxLineSize)
	for i := range b {
		b[i] = 'x'
	}
	return b
}()

// appendLine appends one stamped line of the given size plus "\n" to b.
// A line whose stamp is longer than size (never with size >= minLineSize)
// is left unpadded.
func appendLine(b []byte, seq uint64, nanos int64, size int) []byte {
	start := len(b)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, nanos, 10)
	b = append(b, ' ')
	if n := size - (len(b) - start); n > 0 {
		b = append(b, padding[:n]...)
	}
	return append(b, '\n')
}

// appendProbe appends probe line n plus "\n" to b.
func appendProbe(b []byte, n int) []byte {
	b = append(b, probePrefix...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\n')
}

// parseSeq parses the decimal seq that starts a stamped line and returns it
// and the rest of the line after the following space. ok is false when the
// line is not a stamped line (no leading digit, no space, seq 0 or too long).
func parseSeq(line []byte) (seq uint64, rest []byte, ok bool) {
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		if c < '0' || c > '9' {
			break
		}
		if i == 19 {
			return 0, nil, false // more digits than a uint64 safely holds
		}
		seq = seq*10 + uint64(c-'0')
	}
	if i == 0 || i == len(line) || line[i] != ' ' || seq == 0 {
		return 0, nil, false
	}
	return seq, line[i+1:], true
}

// parseNanos parses the nanos field at the start of rest (the part of a
// stamped line after seq and its space).
func parseNanos(rest []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(rest) && rest[i] != ' '; i++ {
		c := rest[i]
		if c < '0' || c > '9' || i == 19 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, i > 0
}
