package control

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeRequests feeds arbitrary bodies to the send and scale
// decoders: they must never panic, and what they accept must be valid.
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{
		`{"type":"Warning","message":"disk almost full"}`,
		`{"type":"info","message":"a\nb"}`,
		`{"type":"Info","message":""}`,
		`{"workers":3}`,
		`{"workers":-1}`,
		`{"workers":1.5}`,
		`{"workers":1}{"workers":2}`,
		`{"workers":1,"x":2}`,
		`[]`, `null`, ``, `{`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	const max = 100
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := decodeSend(bytes.NewReader(body), now)
		if err == nil {
			if verr := m.Validate(); verr != nil {
				t.Fatalf("decodeSend accepted an invalid message %+v: %v", m, verr)
			}
			if line := m.String(); strings.ContainsAny(line, "\r\n") {
				t.Fatalf("accepted message makes a line with a break: %q", line)
			}
		}
		n, err := decodeScale(bytes.NewReader(body), max)
		if err == nil && (n < 0 || n > max) {
			t.Fatalf("decodeScale accepted %d outside 0..%d", n, max)
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}
