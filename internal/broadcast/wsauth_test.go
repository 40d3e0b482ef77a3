package broadcast

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/signed"
)

// authFrame is a well-formed AUTH frame.
func authFrame(t testing.TB) []byte {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	frame, err := signed.AppendAuth(nil, priv, signed.Challenge{Time: time.Now()}, signed.Binding{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return frame
}

// validAuthAnswer is a well-formed answer.
func validAuthAnswer(t testing.TB) []byte {
	return []byte(`{"auth":"` + base64.StdEncoding.EncodeToString(authFrame(t)) + `"}`)
}

func TestParseWSAuth(t *testing.T) {
	good := validAuthAnswer(t)
	f, err := parseWSAuth(good)
	if err != nil || f.Kind != signed.KindAuth || len(f.Body) != 104 {
		t.Fatalf("a good answer: %v, kind %v, %d bytes", err, f.Kind, len(f.Body))
	}
	for _, tc := range []struct{ in, want string }{
		{``, "not {"},
		{`{"auth":1}`, "not {"},
		{`{"other":"x"}`, "not {"},
		{`{"auth":"aGk="} {}`, "not {"},
		{`{"auth":"@@@"}`, "base64"},
		{`{"auth":"` + base64.StdEncoding.EncodeToString([]byte("short")) + `"}`, "not a signed frame"},
		{`{"auth":"` + base64.StdEncoding.EncodeToString(authFrame(t)[:50]) + `"}`, "part of a frame"},
		{`{"auth":"` + base64.StdEncoding.EncodeToString(append(authFrame(t), authFrame(t)...)) + `"}`, "more than one frame"},
	} {
		if _, err := parseWSAuth([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseWSAuth(f *testing.F) {
	f.Add(validAuthAnswer(f))
	f.Add([]byte(`{"auth":""}`))
	f.Add([]byte(`{"auth":"AAAA"}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		fr, err := parseWSAuth(p)
		if err == nil && !fr.Kind.Known() {
			t.Fatalf("an unknown frame kind %v accepted", fr.Kind)
		}
	})
}

// readWSMessage reads exactly the frames up to the message, never a byte
// more, and never returns more than its bound.
func FuzzReadWSMessage(f *testing.F) {
	key := [4]byte{9, 8, 7, 6}
	f.Add(append(maskedFrame(true, wsPing, nil, key), maskedFrame(true, wsText, []byte(`{"auth":"x"}`), key)...))
	f.Add(maskedFrame(true, wsBinary, []byte("b"), key))
	f.Add(maskedFrame(false, wsText, make([]byte, 200), key))
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0x10, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		r := bytes.NewReader(p)
		msg, err := readWSMessage(r, 64)
		if err != nil {
			return
		}
		if len(msg) > 64 {
			t.Fatalf("a message of %d bytes, over the bound", len(msg))
		}
		// What was read is whole frames ending with the message.
		used := len(p) - r.Len()
		in := append([]byte(nil), p[:used]...)
		off := 0
		for off < used {
			_, n, err := parseWSFrame(in[off:], 64)
			if err != nil || n == 0 {
				t.Fatalf("read %d bytes that are not whole frames (at %d: %v)", used, off, err)
			}
			off += n
		}
	})
}
