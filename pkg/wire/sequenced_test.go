package wire

import (
	"errors"
	"testing"
	"time"
)

func TestParseStart(t *testing.T) {
	since := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	good := map[string]StartRequest{
		"START - next":                       {Stream: "-", From: FromNext},
		"START - first\r":                    {Stream: "-", From: FromFirst},
		"START abc.1_x-2 42":                 {Stream: "abc.1_x-2", From: FromSeq, Seq: 42},
		"START s since 2026-12-06T21:00:00Z": {Stream: "s", From: FromSince, Since: since},
		"START s 18446744073709551615":       {Stream: "s", From: FromSeq, Seq: 18446744073709551615},
	}
	for line, want := range good {
		got, err := ParseStart([]byte(line))
		if err != nil || got.Stream != want.Stream || got.From != want.From || got.Seq != want.Seq || !got.Since.Equal(want.Since) {
			t.Errorf("ParseStart(%q) = %+v, %v; want %+v", line, got, err, want)
		}
		if back, err := ParseStart(AppendStart(nil, got)[:len(AppendStart(nil, got))-1]); err != nil || back.From != got.From || back.Seq != got.Seq {
			t.Errorf("AppendStart(%+v) does not parse back: %+v, %v", got, back, err)
		}
	}
	for _, line := range []string{"", "START", "START -", "START - 0", "START - -1", "START - 18446744073709551616",
		"start - next", "START - next now", "START a/b 1", "START - since", "START - since 5m", "STREAM x 1",
		"START " + string(make([]byte, 200)) + " 1"} {
		if _, err := ParseStart([]byte(line)); !errors.Is(err, ErrStart) {
			t.Errorf("ParseStart(%q) = %v, want ErrStart", line, err)
		}
	}
}

func TestParseServerLine(t *testing.T) {
	cases := map[string]ServerLine{
		"12 hello world":                 {Kind: FeedLine, Seq: 12, Text: []byte("hello world")},
		"7 ":                             {Kind: FeedLine, Seq: 7, Text: []byte("")},
		"STREAM abc 5":                   {Kind: StreamLine, Stream: "abc", Seq: 5},
		"GAP 3 9":                        {Kind: GapLine, Seq: 3, To: 9},
		"CHANGED old new":                {Kind: ChangedLine, Asked: "old", Stream: "new"},
		"KEEP_ALIVE_ACK":                 {Kind: KeepAliveAckLine},
		"ERROR bad START line: too long": {Kind: ErrorLine, Text: []byte("bad START line: too long")},
		"GAP 9 3":                        {},
		"12":                             {},
		"x12 y":                          {},
		"STREAM a/b 1":                   {},
	}
	for line, want := range cases {
		got := ParseServerLine([]byte(line))
		if got.Kind != want.Kind || got.Seq != want.Seq || got.To != want.To || got.Stream != want.Stream || got.Asked != want.Asked || string(got.Text) != string(want.Text) {
			t.Errorf("ParseServerLine(%q) = %+v, want %+v", line, got, want)
		}
	}
}

func FuzzParseStart(f *testing.F) {
	for _, s := range []string{"START - next", "START s 1", "START s since 2026-12-06T21:00:00Z", "START - first\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseStart(line)
		if err != nil {
			return
		}
		enc := AppendStart(nil, r)
		back, err := ParseStart(enc[:len(enc)-1])
		if err != nil || back.Stream != r.Stream || back.From != r.From || back.Seq != r.Seq || !back.Since.Equal(r.Since) {
			t.Fatalf("%q parsed as %+v, re-encoded %q parsed as %+v, %v", line, r, enc, back, err)
		}
	})
}

func FuzzParseServerLine(f *testing.F) {
	for _, s := range []string{"1 a", "STREAM s 1", "GAP 1 2", "CHANGED a b", "ERROR x", "KEEP_ALIVE_ACK"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		l := ParseServerLine(line)
		if l.Kind == GapLine && l.To < l.Seq {
			t.Fatalf("%q: a gap that ends before it starts", line)
		}
		if l.Kind == FeedLine && len(l.Text) > len(line) {
			t.Fatalf("%q: text longer than the line", line)
		}
	})
}

func FuzzParseSeqAck(f *testing.F) {
	f.Add([]byte("ACK 1"))
	f.Add([]byte("ACK 18446744073709551615\r"))
	f.Fuzz(func(t *testing.T, line []byte) {
		n, ok := ParseSeqAck(line)
		if !ok {
			return
		}
		enc := AppendSeqAck(nil, n)
		if back, ok := ParseSeqAck(enc[:len(enc)-1]); !ok || back != n {
			t.Fatalf("%q parsed as %d; %q parses back as %d, %v", line, n, enc, back, ok)
		}
	})
}
