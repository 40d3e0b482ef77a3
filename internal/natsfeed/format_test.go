package natsfeed

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestEncodeDecode(t *testing.T) {
	lines := [][]byte{[]byte("a"), []byte(""), []byte("c c")}
	m := encode("chatty.feed", "P-7", 7, lines)
	if got := string(m.Data); got != "a\n\nc c\n" {
		t.Errorf("payload = %q", got)
	}
	if id := m.Header.Get(nats.MsgIdHdr); id != "P-7" {
		t.Errorf("Nats-Msg-Id = %q, want P-7", id)
	}
	d, err := Decode(m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if d.First != 7 || len(d.Lines) != 3 || string(d.Lines[0]) != "a" || string(d.Lines[1]) != "" || string(d.Lines[2]) != "c c" {
		t.Errorf("Decode = %d %q", d.First, d.Lines)
	}
}

func TestDecode(t *testing.T) {
	h := func(kv ...string) nats.Header {
		hdr := nats.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			hdr.Add(kv[i], kv[i+1])
		}
		return hdr
	}
	for _, tc := range []struct {
		name    string
		hdr     nats.Header
		data    string
		first   uint64
		lines   []string
		wantErr string
	}{
		{"no headers, one line", nil, "hello", 0, []string{"hello"}, ""},
		{"no headers, newline ended", nil, "hello\n", 0, []string{"hello"}, ""},
		{"no headers, two lines", nil, "a\nb", 0, []string{"a", "b"}, ""},
		{"no headers, empty", nil, "", 0, []string{""}, ""},
		{"numbered", h(HeaderSeq, "5", HeaderLines, "2"), "a\nb\n", 5, []string{"a", "b"}, ""},
		{"count mismatch", h(HeaderSeq, "5", HeaderLines, "3"), "a\nb\n", 0, nil, "says 3 lines, the payload has 2"},
		{"no last newline", h(HeaderSeq, "5", HeaderLines, "2"), "a\nb", 0, nil, "last line"},
		{"seq zero", h(HeaderSeq, "0", HeaderLines, "1"), "a\n", 0, nil, "not a sequence number"},
		{"seq not a number", h(HeaderSeq, "x", HeaderLines, "1"), "a\n", 0, nil, "not a sequence number"},
		{"no count", h(HeaderSeq, "1"), "a\n", 0, nil, "exactly one Chatty-Lines"},
		{"two seqs", h(HeaderSeq, "1", HeaderSeq, "2", HeaderLines, "1"), "a\n", 0, nil, "2 Chatty-Seq headers"},
		{"count too large", h(HeaderSeq, "1", HeaderLines, "99999999"), "a\n", 0, nil, "not a count"},
		{"overflow", h(HeaderSeq, "18446744073709551615", HeaderLines, "2"), "a\nb\n", 0, nil, "overflows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decode(tc.hdr, []byte(tc.data))
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrMessage) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Decode error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range d.Lines {
				got = append(got, string(l))
			}
			if d.First != tc.first || strings.Join(got, "|") != strings.Join(tc.lines, "|") || len(got) != len(tc.lines) {
				t.Errorf("Decode = %d %q, want %d %q", d.First, got, tc.first, tc.lines)
			}
		})
	}
}

// FuzzDecode: whatever a publisher on the subject sends, Decode does not
// panic, and what it accepts numbered has as many lines as it says.
func FuzzDecode(f *testing.F) {
	f.Add("5", "2", []byte("a\nb\n"))
	f.Add("", "", []byte("x"))
	f.Add("1", "1", []byte("\n"))
	f.Add("18446744073709551615", "1", []byte("a\n"))
	f.Fuzz(func(t *testing.T, seq, count string, data []byte) {
		hdr := nats.Header{}
		if seq != "" {
			hdr.Set(HeaderSeq, seq)
		}
		if count != "" {
			hdr.Set(HeaderLines, count)
		}
		d, err := Decode(hdr, data)
		if err != nil {
			return
		}
		if len(d.Lines) == 0 {
			t.Fatalf("Decode accepted %q with no lines", data)
		}
		if d.First > 0 && count != "" {
			n := 0
			for _, l := range d.Lines {
				n += len(l) + 1
			}
			if n != len(data) {
				t.Fatalf("lines of %d bytes from a payload of %d", n, len(data))
			}
		}
	})
}
