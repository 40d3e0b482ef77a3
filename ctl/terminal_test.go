package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/ptytest"
)

// openPTY returns a pseudo-terminal's controlling side and its terminal,
// set to pass output unchanged (no "\n" to "\r\n").
func openPTY(t *testing.T) (ctl, term *os.File) {
	t.Helper()
	ctl, term = ptytest.Open(t)
	ptytest.PassOutput(t, term)
	return ctl, term
}

// ptyOutput collects what is written to a pseudo-terminal.
type ptyOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func readPTY(ctl *os.File) *ptyOutput {
	o := &ptyOutput{}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := ctl.Read(b)
			o.mu.Lock()
			o.buf.Write(b[:n])
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return o
}

// waitFor returns what was written once it holds want, or fails at the
// deadline.
func (o *ptyOutput) waitFor(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		o.mu.Lock()
		got := o.buf.String()
		o.mu.Unlock()
		if strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the terminal shows %q; want it to hold %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Lines that hold terminal controls, from a broadcaster: "ESC ] 0 ; title
// BEL" retitles a terminal, "ESC [ 2 J" clears it, CSI U+009B is ESC [ to
// some terminals, "\r" overwrites the line.
const hostile = "plain\tline\n" +
	"\x1b]0;owned\x07title\n" +
	"\x1b[2Jcleared\n" +
	"csi \u009b2J, nul \x00, del \x7f, cr \r, stray \x9b, é ✓\n" +
	"end\n"

// On a terminal watch shows control characters escaped, tab and line ends
// kept.
func TestWatchOnTerminalEscapes(t *testing.T) {
	ctl, term := openPTY(t)
	shown := readPTY(ctl)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errOut bytes.Buffer
	code := run(ctx, []string{"chattyctl", "watch", "--addr", broadcaster(t, hostile)}, term, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "closed the connection") {
		t.Fatalf("watch = %d; stderr %s", code, errOut.String())
	}
	const want = "plain\tline\n" +
		`\x1b]0;owned\x07title` + "\n" +
		`\x1b[2Jcleared` + "\n" +
		`csi \u009b2J, nul \x00, del \x7f, cr \x0d, stray \x9b, é ✓` + "\n" +
		"end\n"
	if got := shown.waitFor(t, "end\n"); got != want {
		t.Fatalf("the terminal shows\n%q\nwant\n%q", got, want)
	}
}

// Into a pipe watch writes the bytes unchanged.
func TestWatchIntoPipeIsRaw(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errOut bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"chattyctl", "watch", "--addr", broadcaster(t, hostile)}, w, &errOut)
		w.Close()
	}()
	var got bytes.Buffer
	if _, err := got.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 1 {
		t.Fatalf("watch = %d; stderr %s", code, errOut.String())
	}
	if got.String() != hostile {
		t.Fatalf("the pipe got\n%q\nwant the bytes unchanged\n%q", got.String(), hostile)
	}
}

// A UTF-8 sequence cut between two writes is shown whole, not as two
// stray bytes; one never completed is escaped at Flush.
func TestEscapingWriterSplitRunes(t *testing.T) {
	in := []byte("a✓\x1b[1mé\u009b\n")
	for cut := 0; cut <= len(in); cut++ {
		var out bytes.Buffer
		ew := &escapingWriter{w: &out}
		for _, p := range [][]byte{in[:cut], in[cut:]} {
			if n, err := ew.Write(p); n != len(p) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		if err := ew.Flush(); err != nil {
			t.Fatal(err)
		}
		if want := `a✓\x1b[1mé\u009b` + "\n"; out.String() != want {
			t.Errorf("cut at %d: %q; want %q", cut, out.String(), want)
		}
	}
	var out bytes.Buffer
	ew := &escapingWriter{w: &out}
	ew.Write([]byte("x\xe2\x9c"))
	ew.Flush()
	if want := `x\xe2\x9c`; out.String() != want {
		t.Errorf("unfinished sequence: %q; want %q", out.String(), want)
	}
}
