package main

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// The NATS reader hands out exactly the payloads, "\n"-terminated, however
// the server's bytes are split, answers every PING and skips the rest.
func TestNatsReaderSplitAnywhere(t *testing.T) {
	stream := "INFO {\"server_id\":\"x\"}\r\n+OK\r\nMSG chatty 1 5\r\nhello\r\nPING\r\n" +
		"MSG chatty 1 reply.to 0\r\n\r\nPONG\r\nMSG chatty 1 11\r\nhello world\r\nPING\r\n"
	want := "hello\n\nhello world\n"
	for cut := 0; cut <= len(stream); cut++ {
		pongs := 0
		src := io.MultiReader(bytes.NewReader([]byte(stream[:cut])), bytes.NewReader([]byte(stream[cut:])))
		r := natsReader{r: iotest.HalfReader(src), pong: func() error { pongs++; return nil }}
		var got []byte
		buf := make([]byte, 64)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if string(got) != want || pongs != 2 {
			t.Fatalf("cut at %d: got %q and %d PONGs, want %q and 2", cut, got, pongs, want)
		}
	}
}

func TestNatsReaderError(t *testing.T) {
	r := natsReader{r: bytes.NewReader([]byte("-ERR 'Slow Consumer'\r\n")), pong: func() error { return nil }}
	if _, err := r.Read(make([]byte, 64)); err == nil || !bytes.Contains([]byte(err.Error()), []byte("Slow Consumer")) {
		t.Fatalf("got %v, want the server's error", err)
	}
}

func TestAppendPubLines(t *testing.T) {
	got := appendPubLines(nil, "s", []byte("ab\n\nxyz\n"))
	if want := "PUB s 2\r\nab\r\nPUB s 0\r\n\r\nPUB s 3\r\nxyz\r\n"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
