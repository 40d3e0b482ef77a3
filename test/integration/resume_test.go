package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/pkg/wire"
	"github.com/chatty-dev/chatty/test/harness"
)

// sequencedConfig runs the sequenced listener with retain (YAML under
// broadcast.retain; "" for the default).
func sequencedConfig(retain string) string {
	body := "broadcast:\n  sequenced:\n    listen: 127.0.0.1:0\n"
	if retain != "" {
		body += "  retain:\n" + retain
	}
	return config(body)
}

// streamOf returns the stream chattyd reports.
func streamOf(t *testing.T, d *harness.Daemon) control.StreamStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	st, err := client.New(d.ControlSocket()).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.Stream
}

// seqClient is a client of the sequenced listener.
type seqClient struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialSequenced(t *testing.T, d *harness.Daemon, start string) *seqClient {
	t.Helper()
	conn, err := net.Dial("tcp", d.Addrs().Sequenced)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte(start + "\n")); err != nil {
		t.Fatal(err)
	}
	return &seqClient{conn: conn, r: bufio.NewReader(conn)}
}

func (c *seqClient) line(t *testing.T) wire.ServerLine {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(long))
	l, err := c.r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("read: %v (after %q)", err, l)
	}
	sl := wire.ParseServerLine(bytes.TrimSuffix(l, []byte("\n")))
	if sl.Kind == wire.BadLine {
		t.Fatalf("not a line of the sequenced protocol: %q", l)
	}
	return sl
}

// A subscriber whose connection is killed (reset, no goodbye) at random
// points while the feed runs reconnects with the number after the last
// line it got, and ends with every line exactly once, in order.
func TestResumeSubscriberKilledAtRandomPoints(t *testing.T) {
	d := harness.StartDaemon(t, harness.Options{Config: sequencedConfig("")})
	const total = 20000
	lines := numbered("resume", 1, total, 60)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for i := 0; i < total; i += 200 {
			d.Feed(lines[i : i+200]...)
			time.Sleep(5 * time.Millisecond) // the pace of a feed, about 40,000 lines/s at most
		}
	}()

	var got []string
	start := "START - first"
	stream := ""
	for kills := 0; len(got) < total; kills++ {
		c := dialSequenced(t, d, start)
		sl := c.line(t)
		if sl.Kind != wire.StreamLine {
			t.Fatalf("answer to %q: %+v", start, sl)
		}
		if stream != "" && sl.Stream != stream {
			t.Fatalf("the stream changed from %s to %s without a restart", stream, sl.Stream)
		}
		stream = sl.Stream
		if want := uint64(len(got) + 1); sl.Seq != want {
			t.Fatalf("resumed at %d, asked for %d", sl.Seq, want)
		}
		budget := 1 + rand.IntN(3000)
		for ; budget > 0 && len(got) < total; budget-- {
			l := c.line(t)
			if l.Kind != wire.FeedLine {
				t.Fatalf("after line %d: %+v (%s)", len(got), l, l.Text)
			}
			if want := uint64(len(got) + 1); l.Seq != want {
				t.Fatalf("line %d came as %d", want, l.Seq)
			}
			got = append(got, string(l.Text))
		}
		// Killed: the connection is reset, whatever was in flight lost.
		c.conn.(*net.TCPConn).SetLinger(0)
		c.conn.Close()
		start = fmt.Sprintf("START %s %d", stream, len(got)+1)
	}
	<-fed
	for i, l := range got {
		if l != lines[i] {
			t.Fatalf("line %d is %q, want %q", i+1, l, lines[i])
		}
	}
}

// chattyctl watch --state, stopped and started again at random points,
// prints every line exactly once, in order.
func TestWatchStateGoesOnAfterTheLastLine(t *testing.T) {
	d := harness.StartDaemon(t, harness.Options{Config: sequencedConfig("")})
	bins := harness.BuildBinaries(t)
	const total = 6000
	lines := numbered("state", 1, total, 40)
	d.Feed(lines[:3000]...)
	fed := len(joinLines(lines[:3000]))
	dir := t.TempDir()
	state := filepath.Join(dir, "watch.state")
	var out []byte
	for run := 0; len(out) < len(joinLines(lines)); run++ {
		if run == 2 {
			d.Feed(lines[3000:]...)
			fed = len(joinLines(lines))
		}
		if run > 100 {
			t.Fatalf("after %d runs, %d bytes of %d printed", run, len(out), len(joinLines(lines)))
		}
		outFile := filepath.Join(dir, fmt.Sprintf("out.%d", run))
		f, err := os.Create(outFile)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--socket", d.ControlSocket(), "watch", "--state", state, "--keepalive", "0"}
		if run == 0 {
			args = append(args, "--from", "first")
		}
		cmd := exec.Command(bins.Chattyctl, args...)
		cmd.Stdout = f
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		// Stop it once it has printed some more, or all there is.
		want := min(len(out)+(1+rand.IntN(40))*1000, fed)
		deadline := time.Now().Add(long)
		for time.Now().Before(deadline) {
			if fi, err := os.Stat(outFile); err == nil && len(out)+int(fi.Size()) >= want {
				break
			}
			time.Sleep(10 * time.Millisecond) // polls a file another process writes
		}
		cmd.Process.Signal(os.Interrupt)
		werr := cmd.Wait()
		b, err := os.ReadFile(outFile)
		if err != nil {
			t.Fatal(err)
		}
		// An interrupt that comes before chattyctl has set up its handling
		// kills it before it did anything; any other end is a failure.
		if werr != nil && !(len(b) == 0 && strings.Contains(werr.Error(), "signal: interrupt")) {
			t.Fatalf("watch run %d: %v\n%s", run, werr, stderr.String())
		}
		out = append(out, b...)
	}
	if got, want := string(out), string(joinLines(lines)); got != want {
		gotLines := strings.Split(got, "\n")
		t.Fatalf("watch runs printed %d lines, want %d exactly once in order; first difference near %q", len(gotLines)-1, total, firstDiff(got, want))
	}
}

func firstDiff(a, b string) string {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[max(0, i-40):min(len(a), i+40)]
		}
	}
	return "(one is a prefix of the other)"
}

// Lines the retention no longer holds are told as a gap with the right
// range, and counted.
func TestResumeGapWhenRetentionIsExceeded(t *testing.T) {
	d := harness.StartDaemon(t, harness.Options{Config: sequencedConfig("    bytes: 262144\n")})
	lines := numbered("gap", 1, 20000, 100) // 2 MB through a retention of one chunk
	d.Feed(lines...)
	var st control.StreamStatus
	for st = streamOf(t, d); st.Last < 20000; st = streamOf(t, d) {
		time.Sleep(10 * time.Millisecond) // chattyd reads the feed
	}
	if st.First <= 1 {
		t.Fatalf("retention of 256 KiB kept everything: %+v", st)
	}
	c := dialSequenced(t, d, fmt.Sprintf("START %s 1", st.ID))
	if l := c.line(t); l.Kind != wire.StreamLine || l.Seq < st.First {
		t.Fatalf("answer %+v; retained from %d", l, st.First)
	}
	gap := c.line(t)
	if gap.Kind != wire.GapLine || gap.Seq != 1 || gap.To < st.First-1 {
		t.Fatalf("want GAP 1 %d, got %+v", st.First-1, gap)
	}
	first := c.line(t)
	if first.Kind != wire.FeedLine || first.Seq != gap.To+1 || string(first.Text) != lines[first.Seq-1] {
		t.Fatalf("after the gap: %+v, want line %d", first, gap.To+1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	full, err := client.New(d.ControlSocket()).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cs := full.Clients; cs.ResumeGaps != 1 || cs.ResumeGapLines != gap.To {
		t.Errorf("status counts %d gaps of %d lines, want 1 of %d", cs.ResumeGaps, cs.ResumeGapLines, gap.To)
	}
}

// A chattyd restarted is another stream: a client resuming with the old
// stream's numbers is told, and given the new stream from its start, not
// other lines under the numbers it asked for.
func TestResumeAcrossRestartIsToldOfTheNewStream(t *testing.T) {
	d := harness.StartDaemon(t, harness.Options{Config: sequencedConfig("")})
	d.Feed(numbered("before", 1, 10, 0)...)
	old := streamOf(t, d)
	d.Signal(os.Interrupt)
	if code := d.Wait(long); code != 0 {
		t.Fatalf("chattyd exited %d", code)
	}
	d = harness.StartDaemon(t, harness.Options{Config: sequencedConfig("")})
	after := numbered("after", 1, 10, 0)
	d.Feed(after...)
	for st := streamOf(t, d); st.Last < 10; st = streamOf(t, d) {
		time.Sleep(10 * time.Millisecond) // chattyd reads the feed
	}
	now := streamOf(t, d)
	if now.ID == old.ID {
		t.Fatalf("a restarted chattyd kept the stream id %s", old.ID)
	}
	c := dialSequenced(t, d, fmt.Sprintf("START %s 5", old.ID))
	if l := c.line(t); l.Kind != wire.ChangedLine || l.Asked != old.ID || l.Stream != now.ID {
		t.Fatalf("want CHANGED %s %s, got %+v", old.ID, now.ID, l)
	}
	if l := c.line(t); l.Kind != wire.StreamLine || l.Stream != now.ID || l.Seq != 1 {
		t.Fatalf("want STREAM %s 1, got %+v", now.ID, l)
	}
	if l := c.line(t); l.Kind != wire.FeedLine || l.Seq != 1 || string(l.Text) != after[0] {
		t.Fatalf("want the new stream's first line, got %+v (%s)", l, l.Text)
	}
}
