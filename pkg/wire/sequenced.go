package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The words of the sequenced line protocol (docs/protocol.md, "The
// sequenced listener"). A client's first line is START; the server
// answers STREAM, maybe preceded by CHANGED and followed by GAP, then sends
// every line as "<seq> <line>". Clients ACK by sequence number and keep
// alive with KEEP_ALIVE, as on the text listener.
const (
	Start       = "START"
	StreamWord  = "STREAM"
	GapWord     = "GAP"
	ChangedWord = "CHANGED"
	ErrorWord   = "ERROR"
	SeqAck      = "ACK"
	AnyStream   = "-"
)

// StartFrom says where a START asks to begin.
type StartFrom int

// The starting points of a START line.
const (
	FromSeq   StartFrom = iota // START <stream> <seq>: from that line
	FromNext                   // START <stream> next: live
	FromFirst                  // START <stream> first: the oldest line retained
	FromSince                  // START <stream> since <RFC 3339 time>: lines from that time
)

// StartRequest is a parsed START line.
type StartRequest struct {
	Stream string // the stream the client's numbers belong to; AnyStream for none
	From   StartFrom
	Seq    uint64    // for FromSeq
	Since  time.Time // for FromSince
}

// MaxStartLine bounds a START line: a stream id, a time and the words.
const MaxStartLine = 160

// ErrStart is wrapped by every error of ParseStart.
var ErrStart = errors.New("bad START line")

// ParseStart parses a client's first line on the sequenced listener
// (terminator removed; a trailing "\r" is tolerated). The stream is
// checked only for its syntax, the caller compares it with its own.
func ParseStart(line []byte) (StartRequest, error) {
	line = TrimCR(line)
	if len(line) > MaxStartLine {
		return StartRequest{}, fmt.Errorf("%w: longer than %d bytes", ErrStart, MaxStartLine)
	}
	f := bytes.Fields(line)
	if len(f) < 3 || string(f[0]) != Start {
		return StartRequest{}, fmt.Errorf("%w: want START <stream> <seq>|next|first|since <time>", ErrStart)
	}
	r := StartRequest{Stream: string(f[1])}
	if r.Stream != AnyStream && !ValidStream(r.Stream) {
		return StartRequest{}, fmt.Errorf("%w: %q is no stream id (letters, digits, '-', '_', '.'; at most 64) nor -", ErrStart, f[1])
	}
	switch w := string(f[2]); {
	case w == "next" && len(f) == 3:
		r.From = FromNext
	case w == "first" && len(f) == 3:
		r.From = FromFirst
	case w == "since" && len(f) == 4:
		t, err := time.Parse(time.RFC3339Nano, string(f[3]))
		if err != nil {
			return StartRequest{}, fmt.Errorf("%w: since wants an RFC 3339 time such as 2026-12-06T21:00:00Z, got %q", ErrStart, f[3])
		}
		r.From, r.Since = FromSince, t
	case len(f) == 3:
		n, err := strconv.ParseUint(w, 10, 64)
		if err != nil || n == 0 {
			return StartRequest{}, fmt.Errorf("%w: %q is no sequence number (from 1), next, first nor since", ErrStart, f[2])
		}
		r.From, r.Seq = FromSeq, n
	default:
		return StartRequest{}, fmt.Errorf("%w: want START <stream> <seq>|next|first|since <time>", ErrStart)
	}
	return r, nil
}

// AppendStart appends r's START line, with its "\n", to b.
func AppendStart(b []byte, r StartRequest) []byte {
	b = append(b, Start+" "...)
	b = append(b, r.Stream...)
	switch r.From {
	case FromNext:
		b = append(b, " next"...)
	case FromFirst:
		b = append(b, " first"...)
	case FromSince:
		b = append(b, " since "...)
		b = r.Since.UTC().AppendFormat(b, time.RFC3339Nano)
	default:
		b = append(b, ' ')
		b = strconv.AppendUint(b, r.Seq, 10)
	}
	return append(b, '\n')
}

// ValidStream reports whether id can name a stream: 1 to 64 bytes of
// letters, digits, '-', '_' and '.', and not "-" alone.
func ValidStream(id string) bool {
	if id == "" || id == AnyStream || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// ServerLineKind says what a line from the sequenced listener is.
type ServerLineKind int

// The kinds of line the sequenced listener sends.
const (
	BadLine          ServerLineKind = iota // none of the others: the client should drop the connection
	FeedLine                               // <seq> <line>
	StreamLine                             // STREAM <stream> <first>
	GapLine                                // GAP <from> <to>
	ChangedLine                            // CHANGED <asked> <stream>
	KeepAliveAckLine                       // KEEP_ALIVE_ACK
	ErrorLine                              // ERROR <reason>
)

// ServerLine is a parsed line of the sequenced listener.
type ServerLine struct {
	Kind   ServerLineKind
	Seq    uint64 // FeedLine: its number; StreamLine: the first to come; GapLine: from
	To     uint64 // GapLine: the last line missing
	Stream string // StreamLine, ChangedLine: this server's stream
	Asked  string // ChangedLine: the stream the client asked for
	Text   []byte // FeedLine: the line; ErrorLine: the reason (aliases the input)
}

// ParseServerLine parses one line from the sequenced listener, terminator
// removed. It never panics.
func ParseServerLine(line []byte) ServerLine {
	if len(line) > 0 && line[0] >= '0' && line[0] <= '9' {
		i := bytes.IndexByte(line, ' ')
		if i < 0 {
			return ServerLine{}
		}
		n, err := strconv.ParseUint(string(line[:i]), 10, 64)
		if err != nil {
			return ServerLine{}
		}
		return ServerLine{Kind: FeedLine, Seq: n, Text: line[i+1:]}
	}
	if string(line) == KeepAliveAck {
		return ServerLine{Kind: KeepAliveAckLine}
	}
	if rest, ok := bytes.CutPrefix(line, []byte(ErrorWord+" ")); ok {
		return ServerLine{Kind: ErrorLine, Text: rest}
	}
	f := bytes.Fields(line)
	if len(f) != 3 {
		return ServerLine{}
	}
	switch string(f[0]) {
	case StreamWord:
		n, err := strconv.ParseUint(string(f[2]), 10, 64)
		if err != nil || !ValidStream(string(f[1])) {
			return ServerLine{}
		}
		return ServerLine{Kind: StreamLine, Stream: string(f[1]), Seq: n}
	case GapWord:
		from, err1 := strconv.ParseUint(string(f[1]), 10, 64)
		to, err2 := strconv.ParseUint(string(f[2]), 10, 64)
		if err1 != nil || err2 != nil || to < from {
			return ServerLine{}
		}
		return ServerLine{Kind: GapLine, Seq: from, To: to}
	case ChangedWord:
		if !ValidStream(string(f[2])) {
			return ServerLine{}
		}
		return ServerLine{Kind: ChangedLine, Asked: string(f[1]), Stream: string(f[2])}
	}
	return ServerLine{}
}

// ParseSeqAck parses a client's "ACK <seq>" on the sequenced listener.
func ParseSeqAck(line []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(TrimCR(line), []byte(SeqAck+" "))
	if !ok || len(rest) == 0 || len(rest) > 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest), 10, 64)
	return n, err == nil
}

// AppendSeqAck appends "ACK <seq>\n" to b.
func AppendSeqAck(b []byte, seq uint64) []byte {
	b = append(b, SeqAck+" "...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '\n')
}
