// Package natsfeed carries chattyd's feed through a NATS JetStream stream,
// so that several chattyd instances broadcast one feed with the same line
// sequence numbers: a Publisher puts feed lines into the stream in
// batches, a Consumer reads the stream back and hands each batch, with
// the global sequence number of its first line, to the broadcaster, and
// Embedded runs nats-server inside chattyd.
//
// # The stream's messages
//
// The feed is published on the stream's first subject. A message carries
// one or more lines, each terminated by "\n", and two headers:
//
//	Chatty-Seq:   the global sequence number of its first line (decimal)
//	Chatty-Lines: how many lines it carries (decimal)
//
// plus Nats-Msg-Id (the publisher's id "-" its own count of the lines it
// has taken before), for the stream's de-duplication. Lines of a message
// are numbered Chatty-Seq, Chatty-Seq+1, ...; every message of the stream
// continues the numbering of the one before it, so the numbers are
// consecutive in the stream's order and the same on every edge, whichever
// message it starts from.
//
// A message without Chatty-Seq (published by another tool, such as
// `nats pub chatty.feed --send-on=newline`) continues the numbering too:
// its payload is split at "\n" (a last "\n" ends the last line), and an
// empty payload is one empty line. An edge that starts on such a message
// finds its number by reading back to the nearest message with
// Chatty-Seq (or the stream's start).
//
// # How numbers are assigned
//
// The Publisher reads the stream's last message when it starts, and after
// any failed publish, and numbers its next line one past that message's
// last line. Every publish carries Nats-Expected-Last-Sequence, the stream
// sequence of the message its numbers continue, and a numbering publisher
// has one batch in flight at a time: it publishes the next only once the
// stream has acknowledged the one before, so the message a publish
// expects to follow is always one whose last line it knows (read, or its
// own acknowledged). The stream stores a batch only directly after that
// message, so two publishers never store the same number and never leave
// a hole: the one that loses the race gets an error, reads the stream
// again and numbers its batch anew. Lines that come while a batch is in
// flight go together in the next (up to the batch limits), which is what
// keeps publishing fast.
//
// A batch keeps its Nats-Msg-Id when it is published again (after a lost
// acknowledgement or a refused publish, possibly with new numbers), so
// the stream stores it once: the retry is answered as a duplicate of the
// stored one, whose numbers stand, and the Publisher reads the numbering
// again. Nats-Expected-Last-Msg-Id is not used: nats-server checks it
// again on every node of a clustered stream as it applies a message, and
// a node that disagrees (one restarted or caught up) stops the stream.
package natsfeed

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// The headers of a stream message (see the package documentation).
const (
	HeaderSeq   = "Chatty-Seq"
	HeaderLines = "Chatty-Lines"
)

// MaxLinesPerMessage bounds Chatty-Lines, so that a message cannot make
// an edge allocate for more lines than it could carry.
const MaxLinesPerMessage = 1 << 20

// ErrMessage is wrapped by Decode's errors.
var ErrMessage = errors.New("not a valid chatty feed message")

// encode builds the message of a batch: lines, each followed by "\n",
// with the headers of the package documentation.
func encode(subject, id string, first uint64, lines [][]byte) *nats.Msg {
	n := 0
	for _, l := range lines {
		n += len(l) + 1
	}
	data := make([]byte, 0, n)
	for _, l := range lines {
		data = append(data, l...)
		data = append(data, '\n')
	}
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(HeaderSeq, strconv.FormatUint(first, 10))
	m.Header.Set(HeaderLines, strconv.Itoa(len(lines)))
	m.Header.Set(nats.MsgIdHdr, id)
	return m
}

// Decoded is one stream message read back.
type Decoded struct {
	// First is Chatty-Seq; 0 for a message without it (numbered by the
	// message before it).
	First uint64
	// Lines are the message's lines, slices of its payload.
	Lines [][]byte
}

// Decode reads a stream message's lines and first sequence number from
// its headers and payload. It never panics: the payload and headers come
// from whoever may publish on the subject.
func Decode(hdr nats.Header, data []byte) (Decoded, error) {
	seqs := hdr.Values(HeaderSeq)
	if len(seqs) == 0 {
		return Decoded{Lines: splitLoose(data)}, nil
	}
	if len(seqs) > 1 {
		return Decoded{}, fmt.Errorf("%w: %d %s headers", ErrMessage, len(seqs), HeaderSeq)
	}
	first, err := strconv.ParseUint(seqs[0], 10, 64)
	if err != nil || first == 0 {
		return Decoded{}, fmt.Errorf("%w: %s %q is not a sequence number (1 or more)", ErrMessage, HeaderSeq, seqs[0])
	}
	counts := hdr.Values(HeaderLines)
	if len(counts) != 1 {
		return Decoded{}, fmt.Errorf("%w: %s needs exactly one %s header, got %d", ErrMessage, HeaderSeq, HeaderLines, len(counts))
	}
	n, err := strconv.Atoi(counts[0])
	if err != nil || n < 1 || n > MaxLinesPerMessage {
		return Decoded{}, fmt.Errorf("%w: %s %q is not a count from 1 to %d", ErrMessage, HeaderLines, counts[0], MaxLinesPerMessage)
	}
	if first > ^uint64(0)-uint64(n) {
		return Decoded{}, fmt.Errorf("%w: %s %d + %d lines overflows", ErrMessage, HeaderSeq, first, n)
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return Decoded{}, fmt.Errorf("%w: the payload's last line has no \"\\n\"", ErrMessage)
	}
	if got := bytes.Count(data, []byte{'\n'}); got != n {
		return Decoded{}, fmt.Errorf("%w: %s says %d lines, the payload has %d", ErrMessage, HeaderLines, n, got)
	}
	lines := make([][]byte, 0, n)
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		lines = append(lines, data[:i:i])
		data = data[i+1:]
	}
	return Decoded{First: first, Lines: lines}, nil
}

// splitLoose splits the payload of a message without headers: at "\n",
// a last "\n" ending the last line; an empty payload is one empty line.
func splitLoose(data []byte) [][]byte {
	data = bytes.TrimSuffix(data, []byte{'\n'})
	lines := make([][]byte, 0, bytes.Count(data, []byte{'\n'})+1)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return append(lines, data[:len(data):len(data)])
		}
		lines = append(lines, data[:i:i])
		data = data[i+1:]
	}
}
