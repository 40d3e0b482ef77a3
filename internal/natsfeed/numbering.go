package natsfeed

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// maxScanBack bounds how many messages without Chatty-Seq lineEnd reads
// back to find a numbered one.
const maxScanBack = 100000

// ErrNumberingLost is wrapped by lineEnd's error when the numbering of
// the stream cannot be found: the messages it would be read from are gone.
var ErrNumberingLost = errors.New("the stream's line numbering cannot be recovered")

// msgGetter reads a stream message by its sequence; jetstream.Stream is one.
type msgGetter interface {
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
}

// lineEnd returns the global sequence number of the last line of stream
// message seq: 0 for seq 0 (nothing before the first message). A message
// with Chatty-Seq says it; one without continues the message before it,
// read back up to maxScanBack messages. A message that fails to decode
// carries no lines.
func lineEnd(ctx context.Context, s msgGetter, seq uint64) (uint64, error) {
	var unnumbered uint64 // lines of the messages without Chatty-Seq passed
	for scanned := 0; seq > 0; scanned++ {
		if scanned == maxScanBack {
			return 0, fmt.Errorf("%w: %d messages without %s before stream sequence %d", ErrNumberingLost, maxScanBack, HeaderSeq, seq)
		}
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, fmt.Errorf("%w: stream message %d is gone", ErrNumberingLost, seq)
		}
		if err != nil {
			return 0, fmt.Errorf("read stream message %d: %w", seq, err)
		}
		d, err := Decode(m.Header, m.Data)
		switch {
		case err != nil:
		case d.First > 0:
			return d.First + uint64(len(d.Lines)) - 1 + unnumbered, nil
		default:
			unnumbered += uint64(len(d.Lines))
		}
		seq--
	}
	return unnumbered, nil
}

// lineStart returns the global sequence number of the first line of
// stream message seq.
func lineStart(ctx context.Context, s msgGetter, seq uint64) (uint64, error) {
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return 0, fmt.Errorf("read stream message %d: %w", seq, err)
	}
	if d, err := Decode(m.Header, m.Data); err == nil && d.First > 0 {
		return d.First, nil
	}
	end, err := lineEnd(ctx, s, seq-1)
	if err != nil {
		return 0, err
	}
	return end + 1, nil
}

// Start is where an edge starts in the stream.
type Start struct {
	StreamSeq uint64 // the stream message to consume first
	Line      uint64 // the global sequence number of its first line
}

// StartPoint finds where an edge starts: at the stream's first message
// (first), at stream sequence seq (when not 0), or after its last message.
// A stream whose numbering cannot be read (every message gone) starts at
// line 1 and the sink sees a gap before the first message it gets.
func StartPoint(ctx context.Context, st jetstream.Stream, first bool, seq uint64) (Start, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return Start{}, fmt.Errorf("stream info: %w", err)
	}
	s := info.State
	from := s.LastSeq + 1
	switch {
	case first:
		from = s.FirstSeq
	case seq > 0:
		from = max(seq, s.FirstSeq)
	}
	if from == 0 {
		from = 1
	}
	var line uint64
	if from <= s.LastSeq && s.Msgs > 0 {
		line, err = lineStart(ctx, st, from)
	} else {
		var end uint64
		end, err = lineEnd(ctx, st, s.LastSeq)
		line = end + 1
	}
	if errors.Is(err, ErrNumberingLost) || errors.Is(err, jetstream.ErrMsgNotFound) {
		return Start{StreamSeq: from, Line: 1}, nil
	}
	if err != nil {
		return Start{}, err
	}
	return Start{StreamSeq: from, Line: line}, nil
}

// StreamID returns the identity of the feed carried by a stream, the same
// on every edge and across restarts, and new when the stream is made
// again (its numbering starts again): 16 characters of base32 from the
// stream's name and creation time.
func StreamID(info *jetstream.StreamInfo) string {
	sum := sha256.Sum256([]byte("chatty nats stream\x00" + info.Config.Name + "\x00" + info.Created.UTC().Format(time.RFC3339Nano)))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:10]))
}
