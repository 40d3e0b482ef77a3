package integration

import (
	"crypto/ed25519"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/chatty-dev/chatty/test/harness"
)

// `chattyctl send Warning ...` between two feed lines reaches a verifying
// client of the signed listener as a Warning whose payload is the text,
// at the time of the line chattyctl printed, while the feed lines stay
// Info; a text client gets that line, as before. In both signing modes.
func TestSendTypedToSignedClients(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"chained", "per-message"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			d, addr, pub, _ := startSignedDaemon(t, mode, "")
			sc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			text := harness.Dial(t, d.Addr())
			statusUntil(t, d, "both clients connected", func(st control.Status) bool { return st.Clients.Connected == 2 })

			// Wait for each feed line, so that the three are published in
			// the order sent.
			d.Feed("a feed line")
			if got := text.ReadLine(short); got != "a feed line" {
				t.Fatalf("text client got %q", got)
			}
			line := strings.TrimSuffix(ctlOK(t, d.ControlSocket(), "send", "Warning", "disk almost full"), "\n")
			d.Feed("another feed line")
			if got := text.ReadLines(2, short); got[0] != line || got[1] != "another feed line" {
				t.Fatalf("text client got %q; want chattyctl's line %q, then the feed line", got, line)
			}

			got := readTyped(t, sc, pub, 3)
			want := []message.Message{
				{Type: message.Info, Text: "a feed line"},
				{Type: message.Warning, Text: "disk almost full"},
				{Type: message.Info, Text: "another feed line"},
			}
			for i, w := range want {
				if got[i].Type != w.Type || got[i].Text != w.Text {
					t.Errorf("signed message %d: %v %q; want %v %q", i+1, got[i].Type, got[i].Text, w.Type, w.Text)
				}
			}
			if got[1].String() != line {
				t.Errorf("the signed Warning at %v reads %q as a line; chattyctl sent %q", got[1].Time, got[1].String(), line)
			}
		})
	}
}

// readTyped reads conn with a Verifier of pub until n messages verified,
// and returns them with their type, payload (as Text) and time.
func readTyped(t *testing.T, conn net.Conn, pub ed25519.PublicKey, n int) []message.Message {
	t.Helper()
	v, err := signed.NewVerifier(pub, signed.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []message.Message
	buf := make([]byte, 32<<10)
	conn.SetReadDeadline(time.Now().Add(short))
	for len(got) < n {
		k, rerr := conn.Read(buf)
		if err := v.Feed(buf[:k], func(m *signed.Message) {
			got = append(got, message.Message{Type: m.Type, Text: string(m.Payload), Time: m.Time})
		}); err != nil {
			t.Fatalf("verifier rejected chattyd's stream after %d messages: %v", len(got), err)
		}
		if rerr != nil {
			t.Fatalf("read after %d messages: %v", len(got), rerr)
		}
	}
	return got
}
