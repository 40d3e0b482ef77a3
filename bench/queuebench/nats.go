package main

// The comparison with NATS JetStream: the engine users would otherwise
// pick for a work queue. One nats-server (the one test/natscluster
// installs) with JetStream, a memory stream with work-queue retention,
// one durable pull consumer, and -workers subscribers, each on its own
// connection, acknowledging every message; -nats-lines messages of -size
// bytes are published asynchronously, and the rate is messages
// acknowledged per second, from the first publish until the stream is
// empty (every message acknowledged and removed). Then the same lines
// through chattyd's work queue across machines on that server: chattyd
// with broadcast.delivery: one and nats, its feed published into the
// work-queue stream (file storage, one line a message), pulled back and
// handed to -workers acking workers of this process, each line
// acknowledged to JetStream after its worker's ack.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/chattydproc"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/test/natscluster"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServer is one nats-server with JetStream on a loopback port.
type natsServer struct {
	url string
	cmd *exec.Cmd
	dir string
}

func startNATS() (*natsServer, error) {
	bin, err := natscluster.Install()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "qbnats")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-sd", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &natsServer{url: fmt.Sprintf("nats://127.0.0.1:%d", port), cmd: cmd, dir: dir}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("nats-server does not listen on %d: %v", port, err)
		}
		time.Sleep(10 * time.Millisecond) // waiting for a process we cannot be told about
	}
}

func (s *natsServer) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(s.dir)
}

// natsWorkQueue measures the JetStream work queue alone.
func natsWorkQueue(ctx context.Context, url string, workers, lines, size int) (float64, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, err
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH", Subjects: []string{"bench.work"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.MemoryStorage, Replicas: 1,
	})
	if err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), "BENCH")
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "bench", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: workers * 1024, AckWait: 30 * time.Second,
	})
	if err != nil {
		return 0, err
	}
	var acked atomic.Int64
	var subs []jetstream.ConsumeContext
	var conns []*nats.Conn
	defer func() {
		for _, s := range subs {
			s.Stop()
		}
		for _, c := range conns {
			c.Close()
		}
	}()
	for range workers {
		c, err := nats.Connect(url)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		sjs, err := jetstream.New(c)
		if err != nil {
			return 0, err
		}
		sc, err := sjs.Consumer(ctx, "BENCH", cons.CachedInfo().Name)
		if err != nil {
			return 0, err
		}
		cc, err := sc.Consume(func(m jetstream.Msg) {
			if m.Ack() == nil {
				acked.Add(1)
			}
		})
		if err != nil {
			return 0, err
		}
		subs = append(subs, cc)
	}
	payload := bytes.Repeat([]byte("x"), size)
	start := time.Now()
	for i := range lines {
		if _, err := js.PublishAsync("bench.work", payload); err != nil {
			return 0, fmt.Errorf("publish %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	for {
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		if info.State.Msgs == 0 && acked.Load() >= int64(lines) {
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("NATS work queue: %d of %d acknowledged: %w", acked.Load(), lines, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return float64(lines) / time.Since(start).Seconds(), nil
}

// acrossMachines measures chattyd's work queue across machines on the
// server at url: one chattyd, its feed through the work-queue stream.
func acrossMachines(ctx context.Context, bin, url string, workers, lines, size, window int) (float64, error) {
	dir, err := os.MkdirTemp("", "qbx")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "chattyd.yaml")
	conf := fmt.Sprintf(`version: 1
broadcast:
  listen: 127.0.0.1:0
  delivery: one
  work_queue:
    max_in_flight: %d
feed:
  on_eof: keep
pool:
  size: 0
log:
  level: warning
nats:
  urls: [%s]
  stream:
    name: FEED
    subjects: [chatty.feed]
  publish:
    window: 1024
  work_queue:
    max_ack_pending: %d
`, window, url, workers*window)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return 0, err
	}
	p, err := chattydproc.Start(chattydproc.Options{
		Bin: bin, ControlSocket: filepath.Join(dir, "c.sock"), Args: []string{"--config", cfg},
		Stderr: os.Stderr, KillWithParent: true,
	})
	if err != nil {
		return 0, err
	}
	defer p.Stop(10 * time.Second)
	addrs, err := p.Addrs(ctx, 30*time.Second)
	if err != nil {
		return 0, err
	}
	feed := newFeeder(p.Feed())
	defer feed.close()
	var acked atomic.Int64
	var ws []*acker
	defer func() {
		for _, a := range ws {
			a.close()
		}
	}()
	for range workers {
		a, err := dialAcker(addrs.Text, &acked, nil)
		if err != nil {
			return 0, err
		}
		ws = append(ws, a)
	}
	if _, err := waitQueue(ctx, p, 10*time.Millisecond, func(q *control.QueueStatus) bool { return len(q.Workers) == workers }); err != nil {
		return 0, err
	}
	var block bytes.Buffer
	for i := range 1024 {
		l := fmt.Sprintf("line %08d ", i)
		block.WriteString(l + strings.Repeat("x", size-len(l)) + "\n")
	}
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		for left := lines; left > 0; left -= 1024 {
			feed.write(block.Bytes()[:min(left, 1024)*(size+1)])
		}
	})
	defer wg.Wait()
	for {
		st, err := p.Control().Status(ctx)
		if err != nil {
			return 0, err
		}
		if w := st.NATS; w != nil && w.WorkQueue != nil && w.WorkQueue.Acked >= uint64(lines) {
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("across machines: %d of %d lines acknowledged by workers: %w", acked.Load(), lines, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return float64(lines) / time.Since(start).Seconds(), nil
}
