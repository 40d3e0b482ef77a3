package integration

// Faults and bad input: workers killed and stopped, clients that misbehave,
// connection floods, garbage on every input, FIFO writers that come and go
// mid-line, and chattyd itself killed. Each test checks that chattyd keeps
// serving the others and loses no complete line. docs/reliability.md
// summarises them.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/test/harness"
)

// status asks chattyd for its status over the control socket.
func status(t *testing.T, d *harness.Daemon) control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	st, err := client.New(d.ControlSocket()).Status(ctx)
	if err != nil {
		t.Fatalf("chattyd status: %v", err)
	}
	return st
}

// readAll reads want from c in the background, skipping KEEP_ALIVE_ACK
// lines, for tests whose main goroutine is busy feeding. The returned
// function waits for the result.
func readAll(t *testing.T, c *harness.Client, want []string, timeout time.Duration) func() error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(timeout)
		for i := 0; i < len(want); {
			line, err := c.TryReadLine(time.Until(deadline))
			if err != nil {
				done <- fmt.Errorf("line %d of %d: %w", i+1, len(want), err)
				return
			}
			if line == harness.KeepAliveAck {
				continue
			}
			if line != want[i] {
				done <- fmt.Errorf("line %d: got %.80q, want %.80q", i+1, line, want[i])
				return
			}
			i++
		}
		done <- nil
	}()
	return func() error { return <-done }
}

// Workers killed with SIGKILL at random moments, while lines flow, are all
// replaced; the restarts in status match the terminations in the log, an
// outside client loses nothing, and no ack is ever mismatched.
func TestFaultWorkersKilledAtRandom(t *testing.T) {
	t.Parallel()
	const n, kills = 6, 20
	d := harness.StartDaemon(t, harness.Options{Config: poolConfig(n, longLives)})
	waitConnected(t, d, 0, 1, n)
	watcher := harness.Dial(t, d.Addr())
	watcher.KeepAlive(short)

	lines := variedLines("kill", 2000)
	check := readAll(t, watcher, lines, long)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for i := 0; i < len(lines); i += 20 {
			d.FeedWriter().Write(joinLines(lines[i : i+20]))
			// Pacing, not synchronisation: it spreads the feed over the
			// kills, so that lines are in flight as workers die.
			time.Sleep(5 * time.Millisecond)
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	for range kills {
		ws := d.WaitWorkers(t, n, long)
		victim := ws[1+rng.IntN(n)]
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, long, func() bool { return !harness.Exists(victim) },
			fmt.Sprintf("killed worker %d was not reaped", victim))
		// Pacing, not synchronisation: random gaps put the kills at
		// varied moments of the feed and of the workers' restarts.
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
	}
	<-fed
	if err := check(); err != nil {
		t.Fatalf("the outside client: %v", err)
	}
	d.WaitWorkers(t, n, long)
	d.WaitLogCount(t, 0, "Process terminated (killed by signal 9) and was restarted", kills, long)
	if got := d.CountLog("Process terminated"); got != kills {
		t.Errorf("%d terminations logged, want %d", got, kills)
	}
	st := status(t, d)
	if st.Pool.Restarts != kills {
		t.Errorf("status: %d restarts, want %d", st.Pool.Restarts, kills)
	}
	if st.Clients.AcksMismatched != 0 {
		t.Errorf("status: %d mismatched acks, want 0", st.Clients.AcksMismatched)
	}
	if st.Clients.AcksGood == 0 {
		t.Error("status: no good acks at all; the workers did not acknowledge")
	}
}

// A worker stopped with SIGSTOP reads nothing: the broadcaster disconnects
// it as a slow consumer once it lags beyond its queue, and the other
// clients lose nothing. Continued, the worker finds its connection closed,
// exits and is replaced. (stop_timeout is long here, so that the pool's
// own rule for stopped workers, tested below, does not race the feed on a
// slow machine.)
func TestFaultStoppedWorkerIsDisconnected(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: `version: 1
broadcast:
  queue_bytes: 1048576
  queue_lines: 100000
  retain:
    bytes: 0
pool:
  size: 1
  stop_timeout: 1h
` + longLives})
	waitConnected(t, d, 0, 1, 1)
	victim := d.WaitWorkers(t, 1, short)[1]
	good := harness.Dial(t, d.Addr())
	good.KeepAlive(short)

	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(victim, syscall.SIGKILL) })
	// 20 MB, more than the stopped worker's socket buffers and queue, paced
	// so that the reading client never lags by more than 256 KiB.
	lines := numbered("stop", 1, 200000, 100)
	feedPacedTo(t, d, good, lines)
	d.WaitLog(t, "[connection: 1] Slow consumer: queue limit exceeded, disconnecting", long)
	if strings.Contains(d.Log(), "[connection: 2] Slow consumer") {
		t.Error("the good client was disconnected too")
	}

	// Continued, it reads the end of its connection and exits.
	if err := syscall.Kill(victim, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	d.WaitLog(t, "[process: 1] Process terminated (exited with code 2) and was restarted", long)
	harness.WaitGone(t, long, victim)
	d.WaitLogCount(t, 0, connectedLine(1), 2, long)
	d.Feed("after")
	if line := good.ReadLine(short); line != "after" {
		t.Fatalf("good client: got %q, want %q", line, "after")
	}
}

// A worker that stays stopped never exits by itself: after stop_timeout
// the pool kills it (not before) and starts a new worker in its slot.
func TestFaultStoppedWorkerIsReplaced(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: poolConfig(1, "  stop_timeout: 2s\n"+longLives)})
	waitConnected(t, d, 0, 1, 1)
	victim := d.WaitWorkers(t, 1, short)[1]
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(victim, syscall.SIGKILL) })
	stoppedAt := time.Now()
	d.WaitLog(t, "[process: 1] The worker has been stopped by a signal for over 2s and reads nothing; sending SIGKILL", long)
	if took := time.Since(stoppedAt); took < 2*time.Second {
		t.Errorf("the stopped worker was killed %s after SIGSTOP, before stop_timeout", took)
	}
	d.WaitLog(t, "[process: 1] Process terminated (killed by signal 9) and was restarted", long)
	harness.WaitGone(t, long, victim)
	if now := d.WaitWorkers(t, 1, long)[1]; now == victim {
		t.Fatal("slot 1 still runs the stopped worker")
	}
	d.WaitLogCount(t, 0, connectedLine(1), 2, long)
	if st := status(t, d); st.Pool.Restarts != 1 {
		t.Errorf("status: %d restarts, want 1", st.Pool.Restarts)
	}
}

// Clients that connect and never write, write but never read, or
// half-close at once cost the others nothing: the silent ones are closed
// at idle_timeout, the half-closed one as gone, and a well-behaved client
// receives every line meanwhile.
func TestFaultMisbehavingClients(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  idle_timeout: 2s\n")})
	good := harness.Dial(t, d.Addr())
	good.KeepAlive(short) // connection 1

	silent := harness.Dial(t, d.Addr()) // connection 2: keeps alive once, then never reads, never writes
	silent.Send(harness.KeepAlive)
	deaf := harness.Dial(t, d.Addr()) // connection 3: writes, never reads
	deaf.Send(harness.KeepAlive)
	deaf.Send("hello")
	half := harness.Dial(t, d.Addr()) // connection 4: half-closes at once
	if err := half.Conn().CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// Connection 5 never writes nor reads, and never kept alive: a
	// listener such as nc, not subject to idle_timeout; the feed stays
	// within its queue limits, so it stays.
	mute := harness.Dial(t, d.Addr())
	_ = mute

	lines := numbered("misbehave", 1, 3000, 64)
	check := readAll(t, good, lines, long)
	// One and a half idle timeouts' worth of feed; the good client keeps
	// alive by writing only (its reader is busy), as the original workers
	// do. The sleep is pacing, not synchronisation: it spreads the feed
	// and the keep-alives over 3 s, longer than idle_timeout plus a sweep,
	// so that the silent clients are closed meanwhile and the good one
	// would be too if its keep-alives did not count. What happened is
	// then waited for in the log.
	for i := 0; i < len(lines); i += 100 {
		d.Feed(lines[i : i+100]...)
		good.Send(harness.KeepAlive)
		time.Sleep(100 * time.Millisecond)
	}
	if err := check(); err != nil {
		t.Fatalf("good client: %v", err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`\[connection: 2\] Connection closed .*reason="idle timeout"`),
		regexp.MustCompile(`\[connection: 3\] Connection closed .*reason="idle timeout"`),
		regexp.MustCompile(`\[connection: 4\] Connection closed .*reason="closed by peer"`),
	} {
		d.WaitLogRE(t, want, long)
	}
	for _, c := range []string{"1", "5"} {
		if strings.Contains(d.Log(), "[connection: "+c+"] Connection closed") {
			t.Fatalf("client %s was closed", c)
		}
	}
	if st := status(t, d); st.Clients.IdleClosed != 2 || st.Clients.Connected != 2 {
		t.Errorf("status: idle_closed %d, connected %d; want 2 and 2", st.Clients.IdleClosed, st.Clients.Connected)
	}
}

// A flood of connections far beyond max_clients (thousands a second, a few
// seconds long): every one over the limit is refused with the error line,
// the control socket keeps answering, and the connected clients receive
// every line fed meanwhile.
func TestFaultConnectionFlood(t *testing.T) {
	t.Parallel()
	const maxClients, kept, floodConns, dialers = 20, 10, 6000, 32
	d := harness.StartDaemon(t, harness.Options{Config: config(fmt.Sprintf("broadcast:\n  max_clients: %d\n", maxClients))})
	var clients []*harness.Client
	for range kept {
		c := harness.Dial(t, d.Addr())
		c.KeepAlive(short)
		clients = append(clients, c)
	}
	lines := numbered("flood", 1, 2000, 64)
	var checks []func() error
	for _, c := range clients {
		checks = append(checks, readAll(t, c, lines, long))
	}

	var dialed, connected, refusedSeen atomic.Int64
	floodCtx, stopFlood := context.WithTimeout(context.Background(), 20*time.Second)
	defer stopFlood()
	var wg sync.WaitGroup
	for range dialers {
		wg.Go(func() {
			var dl net.Dialer
			buf := make([]byte, 128)
			for floodCtx.Err() == nil && dialed.Add(1) <= floodConns {
				conn, err := dl.DialContext(floodCtx, "tcp", d.Addr())
				if err != nil {
					continue
				}
				connected.Add(1)
				conn.SetReadDeadline(time.Now().Add(short))
				if n, _ := io.ReadAtLeast(conn, buf, 1); n > 0 && bytes.HasPrefix(buf[:n], []byte("ERROR too many clients")) {
					refusedSeen.Add(1)
				}
				conn.Close()
			}
		})
	}
	start := time.Now()
	var slowest time.Duration
	for i := 0; i < len(lines); i += 100 {
		d.Feed(lines[i : i+100]...)
		t0 := time.Now()
		status(t, d) // fails the test if it takes longer than long
		slowest = max(slowest, time.Since(t0))
		// Pacing, not synchronisation: it spreads the feed and the
		// status requests over the flood.
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	took := time.Since(start)
	for i, check := range checks {
		if err := check(); err != nil {
			t.Fatalf("client %d: %v", i+1, err)
		}
	}
	st := status(t, d)
	t.Logf("%d connections in %s (%.0f/s), %d refused by chattyd, slowest status %s",
		st.Clients.Accepted+st.Clients.Refused, took.Round(time.Millisecond),
		float64(st.Clients.Accepted+st.Clients.Refused)/took.Seconds(), st.Clients.Refused, slowest)
	// Flood connections closed meanwhile free places for later ones.
	if got, want := st.Clients.Accepted+st.Clients.Refused, uint64(kept+connected.Load()); got != want {
		t.Errorf("status: %d accepted + %d refused, want %d in all", st.Clients.Accepted, st.Clients.Refused, want)
	}
	if st.Clients.Refused < floodConns*9/10 {
		t.Errorf("status: %d refused, want at least %d", st.Clients.Refused, floodConns*9/10)
	}
	if got := refusedSeen.Load(); got < floodConns/2 {
		t.Errorf("only %d of %d flood connections read the refusal line", got, floodConns)
	}
	if st.Clients.SlowConsumers != 0 {
		t.Errorf("status: %d slow consumers, want 0", st.Clients.SlowConsumers)
	}
	for _, c := range clients {
		c.KeepAlive(short)
	}
}

// Garbage on the TCP port: binary bytes, NULs, bad acks, control words
// with odd endings and over-long lines. Each connection is answered or
// closed as the protocol says, and chattyd serves a good client throughout.
func TestFaultGarbageOnTCP(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("broadcast:\n  max_client_line: 256\n")})
	good := harness.Dial(t, d.Addr())
	good.KeepAlive(short)
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
			if b[i] == '\n' {
				b[i] = 0
			}
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		send   []byte
		closed bool // chattyd must close the connection
	}{
		{"binary lines", append(bytes.Join([][]byte{random(100), random(200), random(1)}, []byte("\n")), '\n'), false},
		{"NULs", []byte("\x00\x00\x00\nKEEP_ALIVE\x00\nACK_RECEIVED \x00\n"), false},
		{"bad acks", []byte("ACK_RECEIVED\nACK_RECEIVED \nACK_RECEIVED -1\nACK_RECEIVED 1e9\nACK_RECEIVED 9999999999999999999999999\nACK_RECEIVED  5\n"), false},
		{"odd keep-alives", []byte("KEEP_ALIVE \n KEEP_ALIVE\nkeep_alive\nKEEP_ALIVE\r\r\nKEEP_ALIVE_ACK\n\r\n\n"), false},
		{"invalid UTF-8", []byte("\xff\xfe\xfd\n\xc3\x28\n"), false},
		{"binary without newline", random(1000), true},
		{"over-long line", append(bytes.Repeat([]byte("x"), 300), '\n'), true},
		{"half a megabyte", random(512 << 10), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := harness.Dial(t, d.Addr())
			c.KeepAlive(short)
			c.Conn().SetWriteDeadline(time.Now().Add(short))
			_, werr := c.Conn().Write(tc.send) // chattyd may close before all is written
			if tc.closed {
				c.ReadUntilClosed(short)
				return
			}
			if werr != nil {
				t.Fatalf("write: %v", werr)
			}
			// Still served: a keep-alive sent after the garbage is answered
			// (no answer for the ones garbled above).
			c.KeepAlive(short)
		})
	}
	d.Feed("still here")
	if line := good.ReadLine(short); line != "still here" {
		t.Fatalf("good client: got %q", line)
	}
	good.KeepAlive(short)
	d.WaitLogCount(t, 0, "Client line too long, disconnecting", 3, short)
}

// Garbage on the feed: binary bytes, NULs, CRs and invalid UTF-8 pass
// through unchanged; over-long lines are dropped and counted; nothing
// crashes and the lines around them arrive.
func TestFaultGarbageOnFeed(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{Config: config("feed:\n  max_line_bytes: 1024\n")})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)
	rng := rand.New(rand.NewPCG(5, 6))
	var want []string
	var feed bytes.Buffer
	for i := range 500 {
		n := rng.IntN(1024) + 1
		if i%50 == 0 {
			n = 1025 + rng.IntN(100000) // over-long: dropped
		}
		b := make([]byte, n)
		for j := range b {
			if b[j] = byte(rng.IntN(256)); b[j] == '\n' {
				b[j] = 0
			}
		}
		if b[n-1] == '\r' {
			b[n-1] = 'r' // a final CR would be read as part of "\r\n"
		}
		feed.Write(b)
		feed.WriteByte('\n')
		if n <= 1024 {
			want = append(want, string(b))
		}
	}
	d.FeedBytes(feed.Bytes())
	d.Feed("end")
	got := c.ReadLines(len(want)+1, long)
	if diff := diffLines(got, append(want, "end")); diff != "" {
		t.Fatal(diff)
	}
	if st := status(t, d); st.Feed.Dropped != 10 {
		t.Errorf("status: %d lines dropped, want 10", st.Feed.Dropped)
	}
}

// Garbage on the control socket: bytes that are not HTTP, broken HTTP,
// huge headers and bodies, bad JSON. None of it stops chattyd from
// answering the next status request.
func TestFaultGarbageOnControlSocket(t *testing.T) {
	t.Parallel()
	d := harness.StartDaemon(t, harness.Options{})
	rng := rand.New(rand.NewPCG(7, 8))
	bin := make([]byte, 64<<10)
	for i := range bin {
		bin[i] = byte(rng.IntN(256))
	}
	big := strings.Repeat("a", 2<<20)
	for _, tc := range []struct{ name, send string }{
		{"binary", string(bin)},
		{"not HTTP", "hello chattyd\n\n"},
		{"NULs", "\x00\x00\x00\x00\r\n\r\n"},
		{"bad request line", "GET\r\n\r\n"},
		{"huge header", "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n"},
		{"huge body", "POST /v1/send HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n" + big},
		{"bad JSON", "POST /v1/scale HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"workers"},
		{"wrong type", "POST /v1/scale HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{\"workers\": \"x\"}"},
		{"lying length", "POST /v1/send HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{}"},
		{"chunked garbage", "POST /v1/send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("unix", d.ControlSocket())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(short))
			go io.Copy(io.Discard, conn) // never let chattyd block on us
			conn.Write([]byte(tc.send))
			conn.(*net.UnixConn).CloseWrite()
			status(t, d)
		})
	}
	if d.Exited() {
		t.Fatal("chattyd exited")
	}
	if st := status(t, d); st.Pool.Desired != 0 {
		t.Errorf("garbage changed the pool size to %d", st.Pool.Desired)
	}
}

// FIFO writers that come and go, each ending in the middle of a line: each
// writer's last bytes are ended as a line when it closes, never joined to
// the next writer's, no line is lost, and a writer that leaves an
// over-long unfinished line costs bounded memory (the line is dropped, not
// buffered).
func TestFaultFIFOWritersSplitLines(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "feed.fifo")
	d := harness.StartDaemon(t, harness.Options{Config: config(`
feed:
  source: fifo
  path: ` + fifo + `
  max_line_bytes: 4096
`)})
	c := harness.Dial(t, d.Addr())
	c.KeepAlive(short)
	poll.Eventually(t, short, func() bool {
		w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			w.Close()
		}
		return err == nil
	}, "chattyd never opened its FIFO")

	const writers = 200
	all := joinLines(numbered("fifo", 1, 2000, 80))
	rng := rand.New(rand.NewPCG(9, 10))
	cuts := make([]int, 0, writers+1)
	for range writers - 1 {
		cuts = append(cuts, rng.IntN(len(all)))
	}
	cuts = append(cuts, 0, len(all))
	slices.Sort(cuts)
	rssBefore := vmRSS(t, d.PID())
	for i := 0; i+1 < len(cuts); i++ {
		part := all[cuts[i]:cuts[i+1]]
		if len(part) == 0 {
			continue
		}
		want := strings.Split(strings.TrimSuffix(string(part), "\n"), "\n")
		check := readAll(t, c, want, long)
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(part); err != nil {
			t.Fatal(err)
		}
		w.Close()
		// Only once chattyd has read this writer's end is the next
		// writer's a separate stream: a writer that opens the FIFO
		// before continues the same stream (docs/reliability.md).
		if err := check(); err != nil {
			t.Fatalf("writer %d: %v", i+1, err)
		}
	}

	// The over-long unfinished line: 32 MiB of one writer, no newline,
	// dropped when the writer closes; the next writer's lines are whole.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte("z"), 32<<20)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	d.WaitLogRE(t, regexp.MustCompile(`Dropped an over-long line.* bytes=33554432 `), short)
	w, err = os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("a line of its own\nafter the long line\n"))
	w.Close()
	if diff := diffLines(c.ReadLines(2, long), []string{"a line of its own", "after the long line"}); diff != "" {
		t.Fatalf("after the over-long line: %s", diff)
	}
	if grew := vmRSS(t, d.PID()) - rssBefore; grew > 16<<20 {
		t.Errorf("chattyd's resident memory grew by %d MiB reading a 32 MiB line", grew>>20)
	}
	if d.Exited() {
		t.Fatal("chattyd exited")
	}
}

// chattyd killed with SIGKILL takes its workers with it; a new chattyd
// binds the same address and control socket at once and runs new workers.
func TestFaultDaemonKilledAndRestarted(t *testing.T) {
	t.Parallel()
	const n = 4
	addr := harness.FreeAddr(t)
	sock := filepath.Join(harness.SocketDir(t), "control.sock")
	cfg := poolConfig(n, longLives)
	d := harness.StartDaemon(t, harness.Options{Config: cfg, Listen: addr, ControlSocket: sock})
	waitConnected(t, d, 0, 1, n)
	old := d.WaitWorkers(t, n, short)
	for _, pid := range old {
		harness.KillGroupOnCleanup(t, pid)
	}
	c := harness.Dial(t, addr)
	c.KeepAlive(short)

	d.Signal(syscall.SIGKILL)
	if code := d.Wait(short); code != -1 {
		t.Fatalf("exit status %d, want -1 (killed)", code)
	}
	// The killed chattyd leaves its socket and lock file; the kernel has
	// released the lock, so they do not stop the next one.
	for _, p := range []string{sock, control.LockPath(sock)} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("left by the killed chattyd: %v", err)
		}
	}
	t0 := time.Now()
	d2 := harness.StartDaemon(t, harness.Options{Config: cfg, Listen: addr, ControlSocket: sock})
	bound := time.Since(t0)
	harness.WaitGone(t, short, pids(old)...)
	waitConnected(t, d2, 0, 1, n)
	for slot, pid := range d2.WaitWorkers(t, n, short) {
		for _, o := range old {
			if pid == o {
				t.Errorf("slot %d runs %d, a worker of the killed chattyd", slot, pid)
			}
		}
	}
	// The old client saw its server die.
	if _, err := c.TryReadLine(short); err == nil {
		t.Error("the old connection is still open")
	}
	status(t, d2)
	// StartDaemon fails if the new chattyd cannot bind (it exits with
	// "address already in use"); how long it took is only reported.
	t.Logf("the new chattyd listened %s after the old one was killed", bound.Round(time.Millisecond))
}

// vmRSS returns process pid's resident memory in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}
