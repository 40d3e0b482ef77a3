package natsfeed

import (
	"context"
	"errors"
	"fmt"

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
