// Command manyconns holds tens of thousands of idle clients on one chattyd
// and measures what each costs and how fast a line reaches them all:
//
//   - chattyd's resident memory per connection (VmRSS after connecting
//     minus VmRSS idle, divided by the connections), before and after every
//     client sent one KEEP_ALIVE;
//   - whether every KEEP_ALIVE was answered, and how long the last took;
//   - the time from feeding one line to the last client receiving it.
//
// Clients dial from several loopback source addresses (127.0.0.2 and up),
// since one source address has only about 28,000 ephemeral ports. The tool
// raises its RLIMIT_NOFILE (and its hard limit, as root) before starting
// chattyd, which inherits it. Everything stays on 127.0.0.0/8 and every
// phase has a deadline.
//
// With -websocket the clients are WebSocket clients of chattyd's
// WebSocket listener: each makes the opening handshake, its keep-alive is
// a ping answered by a pong, and each line is a message.
//
//	go run ./bench/manyconns -bin bin/chattyd -conns 50000
//	go run ./bench/manyconns -bin bin/chattyd -conns 18900 -websocket
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control/client"
)

// Result is what one run measured.
type Result struct {
	WebSocket         bool      `json:"websocket,omitempty"`
	Conns             int       `json:"conns"`
	Requested         int       `json:"requested"` // more than Conns when the open-file limit could not be raised
	Connected         int       `json:"connected"`
	DialSeconds       float64   `json:"dial_seconds"`
	RSSIdleKiB        int64     `json:"rss_idle_kib"`
	RSSConnectedKiB   int64     `json:"rss_connected_kib"`
	RSSAfterKAKiB     int64     `json:"rss_after_keepalive_kib"`
	HWMKiB            int64     `json:"hwm_kib"`
	BytesPerConn      float64   `json:"bytes_per_conn"`
	BytesPerConnAfter float64   `json:"bytes_per_conn_after_keepalive"`
	KeepAlivesSent    int       `json:"keepalives_sent"`
	KeepAlivesAnswer  int64     `json:"keepalives_answered"`
	KeepAliveSeconds  float64   `json:"keepalive_seconds"`
	FanoutSeconds     []float64 `json:"fanout_seconds"` // feed to last receipt, one per line
	FanoutReached     []int64   `json:"fanout_reached"`
	Goroutines        int       `json:"goroutines"`
	StackInuseKiB     int64     `json:"stack_inuse_kib"`
	HeapInuseKiB      int64     `json:"heap_inuse_kib"`
	StackAfterKiB     int64     `json:"stack_inuse_after_kib"`
	HeapAfterKiB      int64     `json:"heap_inuse_after_kib"`
	Errors            []string  `json:"errors,omitempty"`
}

func main() {
	bin := flag.String("bin", "bin/chattyd", "chattyd binary")
	conns := flag.Int("conns", 50000, "clients to connect")
	sources := flag.Int("sources", 4, "loopback source addresses to dial from (127.0.0.2 and up)")
	dialers := flag.Int("dialers", 64, "concurrent dials")
	lines := flag.Int("lines", 5, "feed lines to time, one at a time")
	asJSON := flag.String("json", "", "also write the result as JSON to this file")
	timeout := flag.Duration("timeout", 5*time.Minute, "hard deadline for the whole run")
	fallback := flag.Bool("fit", true, "when the open-file limit cannot be raised for -conns, measure as many connections as it allows")
	ws := flag.Bool("websocket", false, "connect WebSocket clients to the WebSocket listener instead of TCP clients")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := run(ctx, *bin, *conns, *sources, *dialers, *lines, *fallback, *ws)
	if err != nil {
		fmt.Fprintln(os.Stderr, "manyconns:", err)
		os.Exit(2)
	}
	print(os.Stdout, res)
	if *asJSON != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		os.WriteFile(*asJSON, append(b, '\n'), 0o644)
	}
	if len(res.Errors) > 0 {
		os.Exit(1)
	}
}

func print(w io.Writer, r *Result) {
	if r.Requested > r.Conns {
		fmt.Fprintf(w, "manyconns: NOT the %d connections asked for: the open-file limit allows only %d\n", r.Requested, r.Conns)
	}
	kind := "TCP"
	if r.WebSocket {
		kind = "WebSocket"
	}
	fmt.Fprintf(w, "manyconns: %d of %d %s clients connected in %.1f s\n", r.Connected, r.Conns, kind, r.DialSeconds)
	fmt.Fprintf(w, "  chattyd VmRSS: idle %.1f MiB, connected %.1f MiB, after keep-alives %.1f MiB, peak %.1f MiB; %d goroutines\n",
		float64(r.RSSIdleKiB)/1024, float64(r.RSSConnectedKiB)/1024, float64(r.RSSAfterKAKiB)/1024, float64(r.HWMKiB)/1024, r.Goroutines)
	fmt.Fprintf(w, "  Go runtime: stacks %.1f MiB, heap in use %.1f MiB when connected; %.1f and %.1f MiB at the end\n",
		float64(r.StackInuseKiB)/1024, float64(r.HeapInuseKiB)/1024, float64(r.StackAfterKiB)/1024, float64(r.HeapAfterKiB)/1024)
	fmt.Fprintf(w, "  per connection: %.0f bytes idle, %.0f bytes after one keep-alive each\n", r.BytesPerConn, r.BytesPerConnAfter)
	fmt.Fprintf(w, "  keep-alives: %d sent, %d answered, the last after %.2f s\n", r.KeepAlivesSent, r.KeepAlivesAnswer, r.KeepAliveSeconds)
	for i, s := range r.FanoutSeconds {
		fmt.Fprintf(w, "  line %d: reached %d clients, the last %.0f ms after it was fed\n", i+1, r.FanoutReached[i], s*1000)
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "  ERROR:", e)
	}
}

// raiseNoFile raises RLIMIT_NOFILE, hard limit included when allowed, to
// at least n. Calling Setrlimit also stops os/exec from restoring the
// original soft limit in children, so chattyd inherits it.
func raiseNoFile(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n && lim.Max >= n {
		return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	want := syscall.Rlimit{Cur: n, Max: max(n, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("raise the open files limit to %d (hard limit %d): %w; raising the hard limit needs root with CAP_SYS_RESOURCE (or a larger LimitNOFILE / ulimit -Hn before starting); otherwise ask for fewer than %d connections", n, lim.Max, err, lim.Max-1024)
	}
	return nil
}

// counters shared by every client's reader.
type counters struct {
	ws         bool // the clients are WebSocket clients
	kaAnswered atomic.Int64
	kaLast     atomic.Int64 // unix nanos of the last answer
	round      atomic.Int64 // the line being timed
	reached    [64]atomic.Int64
	lastAt     [64]atomic.Int64 // unix nanos of the last receipt, per line
}

func atomicMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func (k *counters) read(c *net.TCPConn) {
	buf := make([]byte, 512)
	var partial []byte
	for {
		n, err := c.Read(buf)
		now := time.Now().UnixNano()
		data := buf[:n]
		if len(partial) > 0 {
			data = append(partial, data...)
			partial = nil
		}
		if k.ws {
			var rest []byte
			data, rest = wsLines(data)
			partial = append(partial, rest...)
		}
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				if len(data) > 0 {
					partial = append([]byte(nil), data...)
				}
				break
			}
			line := data[:i]
			data = data[i+1:]
			switch {
			case string(line) == "KEEP_ALIVE_ACK":
				k.kaAnswered.Add(1)
				atomicMax(&k.kaLast, now)
			case bytes.HasPrefix(line, []byte("LINE ")):
				num, _, _ := bytes.Cut(line[5:], []byte(" "))
				r, err := strconv.Atoi(string(num))
				if err == nil && r >= 0 && r < len(k.reached) {
					k.reached[r].Add(1)
					atomicMax(&k.lastAt[r], now)
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func run(ctx context.Context, bin string, n, sources, dialers, lines int, fallback, ws bool) (*Result, error) {
	if lines > 64 {
		lines = 64
	}
	// The tool and chattyd each hold one descriptor per connection. Where
	// the hard limit cannot be raised, measure as many as it allows and
	// say so, rather than nothing.
	requested := n
	if err := raiseNoFile(uint64(n + 1024)); err != nil {
		var lim syscall.Rlimit
		if !fallback || syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil || lim.Max < 2048 {
			return nil, err
		}
		n = int(lim.Max) - 1100
		fmt.Fprintf(os.Stderr, "manyconns: %v\nmanyconns: measuring %d connections instead of %d\n", err, n, requested)
		if err := raiseNoFile(lim.Max); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "manyconns")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	// With -websocket, the WebSocket listener pings no client during
	// the run: the keep-alive phase does.
	dialAddr, wsConfig := addr, ""
	if ws {
		if dialAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		wsConfig = fmt.Sprintf("  websocket:\n    listen: %s\n    ping_interval: 1h\n", dialAddr)
	}
	cfg := fmt.Sprintf(`version: 1
broadcast:
  listen: %s
  max_clients: %d
  idle_timeout: 0s
%spool:
  size: 0
log:
  level: warning
`, addr, n+1000, wsConfig)
	d, files, err := chattydproc.StartInDir(bin, dir, cfg)
	if err != nil {
		return nil, err
	}
	pid, feed := d.PID(), d.Feed()
	defer func() {
		d.KillGroup()
		<-d.Done()
	}()
	ctl := d.Control()
	if _, err := d.Ready(ctx, 15*time.Second); err != nil {
		log, _ := os.ReadFile(files.Log)
		return nil, fmt.Errorf("%w: %s", err, log)
	}
	res := &Result{Conns: n, Requested: requested, WebSocket: ws}
	time.Sleep(time.Second)
	rss, _ := readKiB(pid, "VmRSS:")
	res.RSSIdleKiB = rss

	// Dial.
	k := &counters{ws: ws}
	for i := range k.lastAt {
		k.lastAt[i].Store(0)
	}
	k.round.Store(-1)
	all := make([]*net.TCPConn, n)
	var next atomic.Int64
	var dialErrs atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	var readers sync.WaitGroup
	t0 := time.Now()
	for range dialers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%sources))}
				d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
				c, err := d.DialContext(ctx, "tcp", dialAddr)
				if err == nil && ws {
					if err = wsHandshake(c); err != nil {
						c.Close()
					}
				}
				if err != nil {
					if dialErrs.Add(1) == 1 {
						firstErr.Store(&err)
					}
					continue
				}
				tc := c.(*net.TCPConn)
				all[i] = tc
				readers.Go(func() { k.read(tc) })
			}
		})
	}
	wg.Wait()
	res.DialSeconds = time.Since(t0).Seconds()
	if e := firstErr.Load(); e != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("%d dials failed, the first: %v", dialErrs.Load(), *e))
	}
	defer func() {
		for _, c := range all {
			if c != nil {
				c.Close()
			}
		}
		readers.Wait()
	}()
	want := n - int(dialErrs.Load())
	var st struct{ connected int }
	poll.Until(ctx, time.Minute, func() bool {
		s, err := ctl.Status(ctx)
		if err == nil {
			st.connected = s.Clients.Connected
		}
		return st.connected >= want
	})
	res.Connected = st.connected
	if res.Connected < n {
		res.Errors = append(res.Errors, fmt.Sprintf("chattyd has %d clients, want %d", res.Connected, n))
	}
	time.Sleep(2 * time.Second) // let the accept backlog's goroutines settle
	res.RSSConnectedKiB, _ = readKiB(pid, "VmRSS:")
	res.BytesPerConn = float64(res.RSSConnectedKiB-res.RSSIdleKiB) * 1024 / float64(max(res.Connected, 1))
	res.Goroutines, _ = goroutines(ctx, ctl)
	res.StackInuseKiB, res.HeapInuseKiB = memstats(ctx, ctl)

	// Every client sends one KEEP_ALIVE.
	t1 := time.Now()
	for _, c := range all {
		if c == nil {
			continue
		}
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		ka := []byte("KEEP_ALIVE\n")
		if ws {
			ka = wsPing
		}
		if _, err := c.Write(ka); err == nil {
			res.KeepAlivesSent++
		}
	}
	poll.Until(ctx, time.Minute, func() bool { return k.kaAnswered.Load() >= int64(res.KeepAlivesSent) })
	res.KeepAlivesAnswer = k.kaAnswered.Load()
	res.KeepAliveSeconds = float64(k.kaLast.Load()-t1.UnixNano()) / 1e9
	if res.KeepAlivesAnswer != int64(res.KeepAlivesSent) {
		res.Errors = append(res.Errors, fmt.Sprintf("%d keep-alives sent, %d answered", res.KeepAlivesSent, res.KeepAlivesAnswer))
	}

	// One line at a time, to everybody.
	for r := range lines {
		fed := time.Now()
		if _, err := fmt.Fprintf(feed, "LINE %d %d\n", r, fed.UnixNano()); err != nil {
			return nil, fmt.Errorf("feed chattyd: %w", err)
		}
		poll.Until(ctx, 30*time.Second, func() bool { return k.reached[r].Load() >= int64(res.Connected) })
		res.FanoutReached = append(res.FanoutReached, k.reached[r].Load())
		res.FanoutSeconds = append(res.FanoutSeconds, float64(k.lastAt[r].Load()-fed.UnixNano())/1e9)
		if k.reached[r].Load() < int64(res.Connected) {
			res.Errors = append(res.Errors, fmt.Sprintf("line %d reached %d of %d clients", r+1, k.reached[r].Load(), res.Connected))
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(time.Second)
	res.RSSAfterKAKiB, _ = readKiB(pid, "VmRSS:")
	res.HWMKiB, _ = readKiB(pid, "VmHWM:")
	res.StackAfterKiB, res.HeapAfterKiB = memstats(ctx, ctl)
	res.BytesPerConnAfter = float64(res.RSSAfterKAKiB-res.RSSIdleKiB) * 1024 / float64(max(res.Connected, 1))
	if slices.Max(append(res.FanoutSeconds, 0)) > 1 {
		res.Errors = append(res.Errors, "a line took over 1 s to reach every client")
	}
	return res, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func readKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func goroutines(ctx context.Context, ctl *client.Client) (int, error) {
	n, err := ctl.Metric(ctx, "go_goroutines")
	return int(n), err
}

// memstats reads the Go runtime's stack and heap in use from /metrics.
func memstats(ctx context.Context, ctl *client.Client) (stack, heap int64) {
	b, err := ctl.Metrics(ctx)
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "go_memstats_stack_inuse_bytes":
			stack = int64(v) >> 10
		case "go_memstats_heap_inuse_bytes":
			heap = int64(v) >> 10
		}
	}
	return stack, heap
}

// wsHandshake makes a WebSocket client's opening handshake on c. Nothing
// follows the server's answer before a line is fed, so it reads the
// answer alone.
func wsHandshake(c net.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	req := "GET /v1/feed HTTP/1.1\r\nHost: " + c.RemoteAddr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return err
	}
	var resp []byte
	buf := make([]byte, 512)
	for !bytes.Contains(resp, []byte("\r\n\r\n")) {
		n, err := c.Read(buf)
		resp = append(resp, buf[:n]...)
		if err != nil {
			return fmt.Errorf("websocket handshake: %w", err)
		}
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) {
		first, _, _ := bytes.Cut(resp, []byte("\r\n"))
		return fmt.Errorf("websocket handshake: %s", first)
	}
	return nil
}

// wsPing is a client's ping, masked with a zero key.
var wsPing = []byte{0x89, 0x80, 0, 0, 0, 0}

// wsLines turns the whole server frames of data into lines: a data
// message's payload, a pong as KEEP_ALIVE_ACK. rest is an incomplete
// frame.
func wsLines(data []byte) (lines, rest []byte) {
	for len(data) >= 2 {
		size, hdr := int(data[1]&0x7f), 2
		switch size {
		case 126:
			if len(data) < 4 {
				return lines, data
			}
			size, hdr = int(binary.BigEndian.Uint16(data[2:])), 4
		case 127:
			if len(data) < 10 {
				return lines, data
			}
			size, hdr = int(binary.BigEndian.Uint64(data[2:])), 10
		}
		if len(data) < hdr+size {
			break
		}
		switch data[0] & 0x0f {
		case 0x1, 0x2:
			lines = append(append(lines, data[hdr:hdr+size]...), '\n')
		case 0xa:
			lines = append(lines, "KEEP_ALIVE_ACK\n"...)
		}
		data = data[hdr+size:]
	}
	return lines, data
}
