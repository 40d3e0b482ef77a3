package feed

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// collect runs a LineReader over r and returns the lines and dropped sizes.
func collect(t testing.TB, r io.Reader, max int) (lines []string, dropped []int) {
	t.Helper()
	lr := NewLineReader(r, max)
	lr.OnDrop = func(n int) { dropped = append(dropped, n) }
	err := lr.Run(HandlerFunc(func(batch [][]byte) {
		for _, l := range batch {
			lines = append(lines, string(l))
		}
	}))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return lines, dropped
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 11)
	tests := []struct {
		name    string
		in      string
		max     int
		want    []string
		dropped []int
	}{
		{"lf", "a\nbb\n", 10, []string{"a", "bb"}, nil},
		{"crlf", "a\r\nbb\r\n", 10, []string{"a", "bb"}, nil},
		{"mixed", "a\r\nb\nc\r\n", 10, []string{"a", "b", "c"}, nil},
		{"empty lines kept", "\n\r\n\n", 10, []string{"", "", ""}, nil},
		{"eof without newline", "a\nlast", 10, []string{"a", "last"}, nil},
		{"lone cr inside kept", "a\rb\n", 10, []string{"a\rb"}, nil},
		{"only the last cr is a terminator", "a\r\r\n", 10, []string{"a\r"}, nil},
		{"garbage bytes forwarded", "\x00\xff\xfe\n", 10, []string{"\x00\xff\xfe"}, nil},
		{"exactly max", "0123456789\n", 10, []string{"0123456789"}, nil},
		{"exactly max with crlf", "0123456789\r\n", 10, []string{"0123456789"}, nil},
		{"over max dropped, next kept", long + "\nok\n", 10, []string{"ok"}, []int{11}},
		{"over max at eof dropped", "ok\n" + long, 10, []string{"ok"}, []int{11}},
		{"empty input", "", 10, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, dropped := collect(t, strings.NewReader(tt.in), tt.max)
			if !slices.Equal(got, tt.want) {
				t.Errorf("lines = %q, want %q", got, tt.want)
			}
			if !slices.Equal(dropped, tt.dropped) {
				t.Errorf("dropped = %v, want %v", dropped, tt.dropped)
			}
			// The same input a byte at a time must give the same lines.
			got, dropped = collect(t, iotest.OneByteReader(strings.NewReader(tt.in)), tt.max)
			if !slices.Equal(got, tt.want) || !slices.Equal(dropped, tt.dropped) {
				t.Errorf("one byte at a time: lines = %q dropped = %v", got, dropped)
			}
		})
	}
}

// An over-long line much larger than the read buffer is dropped whole,
// counted once, and memory stays bounded by the buffer.
func TestLineReaderHugeLineAcrossBuffers(t *testing.T) {
	const max = 100
	huge := bytes.Repeat([]byte("y"), 10*minBuffer+7)
	in := io.MultiReader(strings.NewReader("before\n"), bytes.NewReader(huge), strings.NewReader("\nafter\n"))
	lr := NewLineReader(in, max)
	var lines []string
	var dropped []int
	lr.OnDrop = func(n int) { dropped = append(dropped, n) }
	if err := lr.Run(HandlerFunc(func(b [][]byte) {
		for _, l := range b {
			lines = append(lines, string(l))
		}
	})); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lines, []string{"before", "after"}) {
		t.Errorf("lines = %q", lines)
	}
	if len(dropped) != 1 || dropped[0] != len(huge) {
		t.Errorf("dropped = %v, want one line of %d bytes", dropped, len(huge))
	}
	if len(lr.buf) != minBuffer {
		t.Errorf("buffer grew to %d bytes", len(lr.buf))
	}
}

// A maximum larger than the default buffer still delivers maximal lines
// split over many reads.
func TestLineReaderLargeMax(t *testing.T) {
	max := 3 * minBuffer
	line := strings.Repeat("z", max)
	got, dropped := collect(t, iotest.HalfReader(strings.NewReader(line+"\r\n"+line+"z\nend\n")), max)
	if len(got) != 2 || got[0] != line || got[1] != "end" {
		t.Errorf("got %d lines", len(got))
	}
	if !slices.Equal(dropped, []int{max + 1}) {
		t.Errorf("dropped = %v", dropped)
	}
}

func TestLineReaderReadError(t *testing.T) {
	lr := NewLineReader(iotest.ErrReader(io.ErrClosedPipe), 10)
	if err := lr.Run(HandlerFunc(func([][]byte) {})); err != io.ErrClosedPipe {
		t.Errorf("err = %v, want %v", err, io.ErrClosedPipe)
	}
}

// FuzzLineReader checks, for any input split at any position, that the
// reader never panics, that every line it delivers or drops accounts for
// the input exactly, and that no delivered line is over the maximum.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nb\r\nc"), uint8(3), uint16(1))
	f.Add([]byte("\r\n\r\n\n"), uint8(1), uint16(2))
	f.Add([]byte(strings.Repeat("x", 300)+"\nok\n"), uint8(5), uint16(100))
	f.Fuzz(func(t *testing.T, in []byte, max uint8, split uint16) {
		m := int(max)%64 + 1
		s := int(split) % (len(in) + 1)
		r := io.MultiReader(bytes.NewReader(in[:s]), bytes.NewReader(in[s:]))
		got, dropped := collect(t, r, m)

		// The reference: split the whole input at once.
		var want []string
		var wantDropped []int
		rest := in
		for len(rest) > 0 {
			line := rest
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				line, rest = rest[:i], rest[i+1:]
				line = bytes.TrimSuffix(line, []byte("\r"))
			} else {
				rest = nil
			}
			if len(line) > m {
				wantDropped = append(wantDropped, -1)
				continue
			}
			want = append(want, string(line))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("lines = %q, want %q", got, want)
		}
		if len(dropped) != len(wantDropped) {
			t.Fatalf("dropped %d lines, want %d", len(dropped), len(wantDropped))
		}
	})
}
