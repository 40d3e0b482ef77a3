package wire

import (
	"strconv"
	"testing"
)

func TestParseClientLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		kind Kind
		n    int64
	}{
		{"keep-alive", "KEEP_ALIVE", KeepAliveLine, 0},
		{"keep-alive crlf", "KEEP_ALIVE\r", KeepAliveLine, 0},
		{"ack", "ACK_RECEIVED 52", Ack, 52},
		{"ack crlf", "ACK_RECEIVED 52\r", Ack, 52},
		{"ack zero", "ACK_RECEIVED 0", Ack, 0},
		{"ack no number", "ACK_RECEIVED ", Other, 0},
		{"ack negative", "ACK_RECEIVED -1", Other, 0},
		{"ack trailing space", "ACK_RECEIVED 5 ", Other, 0},
		{"ack too many digits", "ACK_RECEIVED 1234567890123456789", Other, 0},
		{"ack lower case", "ack_received 5", Other, 0},
		{"keep-alive with suffix", "KEEP_ALIVE_ACK", Other, 0},
		{"keep-alive with space", "KEEP_ALIVE ", Other, 0},
		{"empty", "", Other, 0},
		{"garbage", "\x00\xff", Other, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, n := ParseClientLine([]byte(tt.in))
			if kind != tt.kind || n != tt.n {
				t.Errorf("ParseClientLine(%q) = %v, %d; want %v, %d", tt.in, kind, n, tt.kind, tt.n)
			}
		})
	}
}

func TestAppendAck(t *testing.T) {
	if got := string(AppendAck(nil, 52)); got != "ACK_RECEIVED 52\n" {
		t.Errorf("AppendAck = %q", got)
	}
	// What a worker sends, the server parses back.
	for _, n := range []int{0, 1, 52, 65536} {
		b := AppendAck(nil, n)
		kind, got := ParseClientLine(b[:len(b)-1])
		if kind != Ack || got != int64(n) {
			t.Errorf("round trip of %d: %v %d", n, kind, got)
		}
	}
}

func TestIsKeepAliveAck(t *testing.T) {
	for in, want := range map[string]bool{"KEEP_ALIVE_ACK": true, "KEEP_ALIVE_ACK\r": true, "KEEP_ALIVE_ACK ": false, "KEEP_ALIVE": false} {
		if got := IsKeepAliveAck([]byte(in)); got != want {
			t.Errorf("IsKeepAliveAck(%q) = %v", in, got)
		}
	}
}

// FuzzParseClientLine checks that any client line parses without panic and
// that an Ack's number is exactly the decimal it was written with.
func FuzzParseClientLine(f *testing.F) {
	for _, s := range []string{"KEEP_ALIVE", "ACK_RECEIVED 52", "ACK_RECEIVED 99999999999999999999", "\r", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		kind, n := ParseClientLine(line)
		switch kind {
		case Ack:
			digits := string(TrimCR(line))[len(AckPrefix):]
			want, err := strconv.ParseInt(digits, 10, 64)
			if err != nil || want != n || n < 0 {
				t.Fatalf("%q parsed as ack %d", line, n)
			}
		case KeepAliveLine:
			if string(TrimCR(line)) != KeepAlive {
				t.Fatalf("%q parsed as keep-alive", line)
			}
		}
	})
}
