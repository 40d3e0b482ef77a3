package controlserver

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// FuzzDecodeRequests feeds arbitrary bodies to the send, scale and stop
// decoders: they must never panic, and what they accept must be valid: an
// object with each documented key exactly once, spelt exactly, and a
// message text without control characters.
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{
		`{"type":"Warning","message":"disk almost full"}`,
		`{"type":"info","message":"a\nb"}`,
		`{"type":"Info","message":""}`,
		`{"type":"info","message":"tab\tkept"}`,
		`{"workers":3}`,
		`{"seq":12}`, `{"seq":0}`, `{"seq":-1}`, `{"seq":18446744073709551616}`, `{"seq":"3"}`,
		`{"workers":-1}`,
		`{"workers":1.5}`,
		`{"workers":1}{"workers":2}`,
		`{"workers":1,"x":2}`,
		// Duplicate keys: encoding/json alone keeps the last.
		`{"workers": 10001, "workers": 0}`,
		`{"workers":1,"work\u0065rs":2}`,
		`{"type":"info","message":"a","message":"b"}`,
		`{"type":"info","type":"error","message":"a"}`,
		`{"a":1,"a":2}`,
		// Names that encoding/json alone matches without regard to case.
		`{"Type": "info", "Message": "x"}`,
		`{"WORKERS":3}`,
		`{"wor\u212aers":3}`,
		`{"ty\u017fpe":"info","message":"x"}`,
		// Control characters in the text.
		`{"type":"info","message":"a\u0000b"}`,
		`{"type":"info","message":"\u001b]0;title\u0007"}`,
		`{"type":"info","message":"\u001b[2J"}`,
		"{\"type\":\"info\",\"message\":\"del\x7f\"}",
		`{"type":"info","message":"\u009b2J"}`,
		"{\"type\":\"info\",\"message\":\"raw \xc2\x9b\"}",
		"{\"type\":\"info\",\"message\":\"stray \x9b\"}",
		`[]`, `null`, ``, `{`, `"x"`, `{}`, ` { } `,
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
			if strings.ContainsFunc(m.Text, message.IsControl) {
				t.Fatalf("accepted a text with a control character: %q", m.Text)
			}
			checkAccepted(t, body, "message", "type")
		}
		checkError(t, err)
		n, err := decodeScale(bytes.NewReader(body), max)
		if err == nil {
			if n < 0 || n > max {
				t.Fatalf("decodeScale accepted %d outside 0..%d", n, max)
			}
			checkAccepted(t, body, "workers")
		}
		checkError(t, err)
		seq, err := decodeRetry(bytes.NewReader(body))
		if err == nil {
			if seq == 0 {
				t.Fatal("decodeRetry accepted sequence number 0")
			}
			checkAccepted(t, body, "seq")
		}
		checkError(t, err)
		if err := decodeEmpty(bytes.NewReader(body)); err == nil && len(bytes.TrimSpace(body)) > 0 {
			checkAccepted(t, body)
		}
	})
}

// checkAccepted checks that an accepted body is an object with exactly
// the keys want (sorted), each once.
func checkAccepted(t *testing.T, body []byte, want ...string) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Fatalf("accepted %q, which is no JSON object: %v", body, err)
	}
	if got := slices.Sorted(maps.Keys(obj)); !slices.Equal(got, want) {
		t.Fatalf("accepted %q with keys %q; want exactly %q", body, got, want)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.Token() // {
	keys := 0
	for dec.More() {
		dec.Token()
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys++
	}
	if keys != len(obj) {
		t.Fatalf("accepted %q, which has %d keys for %d names: a key appears twice", body, keys, len(obj))
	}
}

// checkError checks that an error is one a user can read: not empty, and
// free of control characters that would reach their terminal.
func checkError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if err.Error() == "" {
		t.Fatal("empty error message")
	}
	if strings.ContainsFunc(err.Error(), message.IsControl) {
		t.Fatalf("error holds a control character: %q", err)
	}
}
