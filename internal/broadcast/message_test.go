package broadcast

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// A typed message published between feed lines reaches a signed client
// in its place, as a verified message of its type and time whose payload
// is its text; the lines around it stay Info. Acks of all three count.
func TestPublishMessageSigned(t *testing.T) {
	for _, mode := range []signed.Mode{signed.Chained, signed.PerMessage} {
		t.Run(mode.String(), func(t *testing.T) {
			s, pub, _ := startSigned(t, SignedOptions{Mode: mode})
			c := dialSigned(t, s, pub)
			c.acks = true
			sent := time.Now().Add(-time.Second) // not the time of publishing
			publish(s, "before")
			seq := s.PublishMessage(message.Message{Type: message.Warning, Text: "disk almost full", Time: sent})
			publish(s, "after")
			if err := c.readUntil(t, 3); err != nil {
				t.Fatal(err)
			}

			want := []struct {
				typ     message.Type
				payload string
			}{{message.Info, "before"}, {message.Warning, "disk almost full"}, {message.Info, "after"}}
			for i, w := range want {
				m := c.got[i]
				if m.Seq != uint64(i+1) || m.Type != w.typ || string(m.Payload) != w.payload {
					t.Errorf("message %d: seq %d, %v %q; want seq %d, %v %q", i, m.Seq, m.Type, m.Payload, i+1, w.typ, w.payload)
				}
			}
			if seq != 2 || !c.got[1].Time.Equal(sent) {
				t.Errorf("PublishMessage gave seq %d, time %v; want 2 and %v", seq, c.got[1].Time, sent)
			}
			poll.Eventually(t, wait, func() bool { return s.Stats().AcksGood == 3 }, "acks counted")
		})
	}
}

// A text server sends a typed message as its text line, acknowledged by
// that line's length like any other; with no client it is undelivered.
func TestPublishMessageText(t *testing.T) {
	s := startServer(t, testLimits())
	m := message.Message{Type: message.Error, Text: "no space left", Time: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}
	s.PublishMessage(m)
	c := dial(t, s)
	publish(s, "line")
	seq := s.PublishMessage(m)
	if got := c.readLine(t); got != "line" {
		t.Fatalf("got %q, want the feed line first", got)
	}
	line := c.readLine(t)
	if line != "2026-11-24T10:00:00.000Z [Error] no space left" || line != m.String() {
		t.Errorf("got %q, want the message's text line %q", line, m.String())
	}
	fmt.Fprintf(c, "ACK_RECEIVED %d\nACK_RECEIVED %d\n", len("line"), len(line))
	poll.Eventually(t, wait, func() bool { return s.Stats().AcksGood == 2 }, "acks counted")
	if st := s.Stats(); seq != 3 || st.Lines != 3 || st.Undelivered != 1 || st.AcksMismatched != 0 {
		t.Errorf("seq %d, stats %+v; want seq 3, 3 lines, 1 undelivered", seq, st)
	}
}

// A message the signed codec cannot sign (an invalid type) goes to no
// signed client and takes no sequence number; the stream goes on.
func TestPublishMessageSignedInvalid(t *testing.T) {
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage})
	c := dialSigned(t, s, pub)
	s.PublishMessage(message.Message{Type: 0, Text: "no type"})
	publish(s, "next")
	if err := c.readUntil(t, 1); err != nil {
		t.Fatal(err)
	}
	if m := c.got[0]; m.Seq != 1 || string(m.Payload) != "next" {
		t.Errorf("got seq %d %q; want seq 1 \"next\"", m.Seq, m.Payload)
	}
}

// Feed lines take the configured type; an invalid one is refused.
func TestSignedFeedType(t *testing.T) {
	s, pub, _ := startSigned(t, SignedOptions{Mode: signed.PerMessage, FeedType: message.Critical})
	c := dialSigned(t, s, pub)
	publish(s, "reactor temperature high")
	if err := c.readUntil(t, 1); err != nil {
		t.Fatal(err)
	}
	if m := c.got[0]; m.Type != message.Critical || string(m.Payload) != "reactor temperature high" {
		t.Fatalf("feed line delivered as %v %q, want Critical", m.Type, m.Payload)
	}
	if _, err := newSignedCodec(SignedOptions{Key: testSigningKey(t), Mode: signed.Chained, FeedType: message.Type(9)}, nil); err == nil {
		t.Fatal("a feed type of 9 was accepted")
	}
}

func testSigningKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}
