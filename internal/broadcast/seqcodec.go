package broadcast

import (
	"strconv"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/wire"
)

// seqCodec is the sequenced line protocol (docs/protocol.md, "The
// sequenced listener"): every line is sent as "<seq> <line>\n", so no feed
// line can be taken for a control word, and a gap in the log's numbers is
// a "GAP <from> <to>" line, which takes no sequence number.
type seqCodec struct{}

// maxSeqDigits is the most digits of a sequence number.
const maxSeqDigits = 20

func (seqCodec) maxSize(n int) int { return maxSeqDigits + 1 + n + 1 }

func (seqCodec) encodeLocked(dst, line []byte, seq uint64) ([]byte, bool) {
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ' ')
	return append(append(dst, line...), '\n'), true
}

func (seqCodec) encodeMessageLocked(dst []byte, m *message.Message, seq uint64) ([]byte, bool) {
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ' ')
	return append(m.AppendText(dst), '\n'), true
}

func (seqCodec) appendedLocked(*log)     {}
func (seqCodec) closingLocked(*log)      {}
func (seqCodec) chunkLocked(_, _ *chunk) {}

// joinLocked is never used: every client of the sequenced listener starts
// through resumeLocked, which answers its START.
func (seqCodec) joinLocked() (joined, error) { return joined{}, nil }

// isRaw reports whether an encoded line is one of the codec's own (GAP),
// which take no sequence number: feed lines start with a digit.
func isRaw(line []byte) bool { return len(line) == 0 || line[0] < '0' || line[0] > '9' }

func (seqCodec) skip(buf []byte, n uint64) int { return skipLines(buf, n, isRaw) }

// gapLocked marks the jump in the log itself, for the clients reading past
// it live.
func (seqCodec) gapLocked(l *log, from, to uint64) {
	l.appendRawLocked(len(wire.GapWord)+2*maxSeqDigits+3, func(dst []byte) []byte {
		return appendGap(dst, gapRange{from, to})
	})
}

// resumeLocked answers a START: CHANGED when the client's numbers were
// another stream's, STREAM with the first line to come, and GAP when lines
// it asked for are gone.
func (seqCodec) resumeLocked(l *log, cur cursor, gap gapRange, other string) (joined, error) {
	var b []byte
	if other != "" {
		b = append(b, wire.ChangedWord+" "...)
		b = append(b, other...)
		b = append(b, ' ')
		b = append(b, l.stream...)
		b = append(b, '\n')
	}
	b = append(b, wire.StreamWord+" "...)
	b = append(b, l.stream...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, cur.seq, 10)
	b = append(b, '\n')
	if !gap.empty() {
		b = appendGap(b, gap)
	}
	return joined{preamble: b}, nil
}

func appendGap(b []byte, g gapRange) []byte {
	b = append(b, wire.GapWord+" "...)
	b = strconv.AppendUint(b, g.From, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, g.To, 10)
	return append(b, '\n')
}
