package harness

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/signed"
)

// fakeFrame is a frame with a sequence number as the start of its body;
// the proxy only cuts frames, so bodies need not be valid.
func fakeFrame(kind signed.Kind, seq uint64) []byte {
	body := binary.BigEndian.AppendUint64(nil, seq)
	body = fmt.Appendf(body, "payload %d", seq)
	return appendFrame(nil, kind, body)
}

// frameNames reads frames from r until it ends and names each, as
// "ANCHOR 0" or "CHAINED 3", with "!" after a body that is not the one
// fakeFrame made.
func frameNames(t *testing.T, r io.Reader) []string {
	t.Helper()
	dec := signed.NewDecoder(0)
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	dec.Feed(b)
	var out []string
	for {
		f, ok, err := dec.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		seq := binary.BigEndian.Uint64(f.Body)
		name := fmt.Sprintf("%v %d", f.Kind, seq)
		if !slices.Equal(appendFrame(nil, f.Kind, f.Body), fakeFrame(f.Kind, seq)) {
			name += "!"
		}
		out = append(out, name)
	}
	if dec.Buffered() != 0 {
		t.Errorf("%d bytes of a cut frame at the end", dec.Buffered())
	}
	return out
}

// The proxy drops, swaps, replays or flips exactly the Nth message frame,
// leaves every other frame as it was, passes the client's bytes unchanged
// and records its ACKs.
func TestSignedProxy(t *testing.T) {
	// An anchor, five chained messages with a checkpoint after the third.
	var stream []byte
	stream = append(stream, fakeFrame(signed.KindAnchor, 0)...)
	for seq := uint64(1); seq <= 5; seq++ {
		stream = append(stream, fakeFrame(signed.KindChained, seq)...)
		if seq == 3 {
			stream = append(stream, fakeFrame(signed.KindCheckpoint, 3)...)
		}
	}
	cases := []struct {
		name string
		opts ProxyOptions
		want string
	}{
		{"drop", ProxyOptions{Tamper: Drop, Nth: 2}, "ANCHOR 0, CHAINED 1, CHAINED 3, CHECKPOINT 3, CHAINED 4, CHAINED 5"},
		{"swap across a checkpoint", ProxyOptions{Tamper: Swap, Nth: 3}, "ANCHOR 0, CHAINED 1, CHAINED 2, CHECKPOINT 3, CHAINED 4, CHAINED 3, CHAINED 5"},
		{"swap the last", ProxyOptions{Tamper: Swap, Nth: 5}, "ANCHOR 0, CHAINED 1, CHAINED 2, CHAINED 3, CHECKPOINT 3, CHAINED 4, CHAINED 5"},
		{"replay", ProxyOptions{Tamper: Replay, Nth: 1}, "ANCHOR 0, CHAINED 1, CHAINED 2, CHAINED 1, CHAINED 3, CHECKPOINT 3, CHAINED 4, CHAINED 5"},
		{"replay later", ProxyOptions{Tamper: Replay, Nth: 2, ReplayAfter: 2}, "ANCHOR 0, CHAINED 1, CHAINED 2, CHAINED 3, CHECKPOINT 3, CHAINED 4, CHAINED 2, CHAINED 5"},
		{"flip", ProxyOptions{Tamper: Flip, Nth: 4}, "ANCHOR 0, CHAINED 1, CHAINED 2, CHAINED 3, CHECKPOINT 3, CHAINED 4!, CHAINED 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			daemon, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer daemon.Close()
			p := StartSignedProxy(t, daemon.Addr().String(), tc.opts)
			client, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			client.SetDeadline(time.Now().Add(10 * time.Second))
			up, err := daemon.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer up.Close()
			up.SetDeadline(time.Now().Add(10 * time.Second))

			// The daemon's stream in pieces that cut frames anywhere.
			for i := 0; i < len(stream); i += 7 {
				if _, err := up.Write(stream[i:min(i+7, len(stream))]); err != nil {
					t.Fatal(err)
				}
			}
			sent := signed.AppendAck(signed.AppendPing(nil, 9), 2)
			sent = signed.AppendAck(sent, 4)
			if _, err := client.Write(sent); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(sent))
			if _, err := io.ReadFull(up, got); err != nil || !slices.Equal(got, sent) {
				t.Errorf("the daemon got %x (%v), want the client's %x", got, err, sent)
			}
			up.Close() // the daemon ends the stream

			if names := strings.Join(frameNames(t, client), ", "); names != tc.want {
				t.Errorf("the client got\n%s\nwant\n%s", names, tc.want)
			}
			p.WaitClosed(10 * time.Second)
			if acks := p.Acks(); !slices.Equal(acks, []uint64{2, 4}) {
				t.Errorf("acks %v, want [2 4]", acks)
			}
			if seq, ok := p.Tampered(); !ok || seq != uint64(tc.opts.Nth) {
				t.Errorf("tampered seq %d (%v), want %d", seq, ok, tc.opts.Nth)
			}
		})
	}
}
