package worker

import (
	"bufio"
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/chatty-dev/chatty/internal/logging"
)

// wait bounds every wait in these tests; nothing should come near it.
const wait = 10 * time.Second

// testServer accepts connections on 127.0.0.1 and hands them to the test.
type testServer struct {
	ln    net.Listener
	conns chan net.Conn
}

func newServer(t *testing.T) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{ln: ln, conns: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		close(s.conns)
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

// accept returns the next connection; the test's cleanup closes it.
func (s *testServer) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(wait))
		return c
	case <-time.After(wait):
		t.Fatal("the worker did not connect")
		return nil
	}
}

// opts returns options that do nothing on their own for the test's length.
func opts(addr string) Options {
	return Options{
		Addr:             addr,
		Slot:             1,
		LifetimeMin:      time.Hour,
		LifetimeMax:      time.Hour,
		KeepAliveMin:     time.Hour,
		KeepAliveMax:     time.Hour,
		KeepAliveTimeout: time.Hour,
	}
}

// start runs a worker; cancel stops it, and the returned channel yields
// Run's result. The test's cleanup cancels and waits for it.
func start(t *testing.T, o Options) (cancel func(), result <-chan error) {
	t.Helper()
	return startLogged(t, o, logging.Discard())
}

// startLogged is start with the worker logging to log.
func startLogged(t *testing.T, o Options, log *logrus.Entry) (cancel func(), result <-chan error) {
	t.Helper()
	goroutines := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		res <- Run(ctx, o, log)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		deadline := time.Now().Add(wait)
		for runtime.NumGoroutine() > goroutines {
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines left, %d before the worker started", runtime.NumGoroutine(), goroutines)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return cancel, res
}

func result(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(wait):
		t.Fatal("Run did not return")
		return nil
	}
}

// wantExit checks that err is an *ExitError with ExitRestart wrapping reason.
func wantExit(t *testing.T, err, reason error) {
	t.Helper()
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("Run returned %v (%T), want an *ExitError", err, err)
	}
	if ee.Code != ExitRestart {
		t.Errorf("exit code %d, want %d", ee.Code, ExitRestart)
	}
	if !errors.Is(err, reason) {
		t.Errorf("Run returned %q, want it to wrap %q", err, reason)
	}
}

// writeAsync writes data to c from a goroutine that the test's cleanup
// ends (by closing c) and waits for.
func writeAsync(t *testing.T, c net.Conn, data string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Write([]byte(data))
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading from the worker: %v (got %q)", err, line)
	}
	return line
}

func TestAcksEveryLineButKeepAliveAck(t *testing.T) {
	srv := newServer(t)
	cancel, res := start(t, opts(srv.addr()))
	c := srv.accept(t)

	long := strings.Repeat("x", 70000) // more than one read's worth is fine too
	feed := "2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE\n" +
		"ab\r\n" +
		"KEEP_ALIVE_ACK\n" +
		"KEEP_ALIVE_ACK\r\n" +
		"\n" +
		"\r\n" +
		"KEEP_ALIVE_ACKx\n" +
		"a\rb\n" +
		long + "\n"
	// Split the feed across writes at awkward places.
	for _, part := range []string{feed[:3], feed[3:60], feed[60:75], feed[75:]} {
		if _, err := c.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"52", "2", "0", "0", "15", "3", "70000"}
	r := bufio.NewReader(c)
	for _, n := range want {
		if got := readLine(t, r); got != "ACK_RECEIVED "+n+"\n" {
			t.Fatalf("got %q, want %q", got, "ACK_RECEIVED "+n+"\n")
		}
	}

	cancel()
	if err := result(t, res); err != nil {
		t.Fatalf("Run after cancel returned %v, want nil", err)
	}
	// The worker closed its end and sent nothing more.
	if rest, err := r.ReadString('\n'); err == nil || rest != "" {
		t.Errorf("after the acks: got %q, %v; want EOF", rest, err)
	}
}

func TestManyLinesInOneWrite(t *testing.T) {
	srv := newServer(t)
	start(t, opts(srv.addr()))
	c := srv.accept(t)

	const lines = 20000
	batch := strings.Repeat("0123456789\n", lines)
	writeAsync(t, c, batch) // the test reads the acks meanwhile
	r := bufio.NewReader(c)
	for i := range lines {
		if got := readLine(t, r); got != "ACK_RECEIVED 10\n" {
			t.Fatalf("ack %d: got %q", i, got)
		}
	}
}

func TestKeepAlive(t *testing.T) {
	srv := newServer(t)
	o := opts(srv.addr())
	o.KeepAliveMin, o.KeepAliveMax = 50*time.Millisecond, 100*time.Millisecond
	o.KeepAliveTimeout = wait
	_, res := start(t, o)
	c := srv.accept(t)
	r := bufio.NewReader(c)

	for i := range 3 {
		t0 := time.Now()
		if got := readLine(t, r); got != "KEEP_ALIVE\n" {
			t.Fatalf("keep-alive %d: got %q", i, got)
		}
		if d := time.Since(t0); d < 40*time.Millisecond && i > 0 {
			t.Errorf("keep-alive %d came %s after the previous one, before keepalive_min", i, d)
		}
		if _, err := c.Write([]byte("KEEP_ALIVE_ACK\n")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-res:
		t.Fatalf("worker ended although every keep-alive was answered: %v", err)
	default:
	}
}

func TestKeepAliveTimeout(t *testing.T) {
	srv := newServer(t)
	o := opts(srv.addr())
	o.KeepAliveMin, o.KeepAliveMax = 10*time.Millisecond, 20*time.Millisecond
	o.KeepAliveTimeout = 100 * time.Millisecond
	_, res := start(t, o)
	c := srv.accept(t)

	// Read everything and answer nothing: the worker must hang up.
	buf := make([]byte, 4096)
	var got strings.Builder
	for {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the worker did not close the connection")
			}
			break
		}
	}
	if !strings.HasPrefix(got.String(), "KEEP_ALIVE\n") {
		t.Errorf("worker sent %q, want keep-alives", got.String())
	}
	wantExit(t, result(t, res), ErrKeepAliveTimeout)
}

func TestExitReasons(t *testing.T) {
	t.Run("server closes", func(t *testing.T) {
		srv := newServer(t)
		_, res := start(t, opts(srv.addr()))
		srv.accept(t).Close()
		wantExit(t, result(t, res), ErrServerClosed)
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		logger, hook := logtest.NewNullLogger()
		_, res := startLogged(t, opts(addr), logrus.NewEntry(logger))
		wantExit(t, result(t, res), ErrConnect)
		if e := hook.LastEntry(); e == nil || !strings.HasPrefix(e.Message, "Exiting: "+ErrConnect.Error()) {
			t.Errorf("last log entry %+v; want the worker to say why it exits", e)
		}
	})
	t.Run("lifetime elapsed", func(t *testing.T) {
		srv := newServer(t)
		o := opts(srv.addr())
		o.LifetimeMin, o.LifetimeMax = 50*time.Millisecond, 80*time.Millisecond
		_, res := start(t, o)
		c := srv.accept(t)
		wantExit(t, result(t, res), ErrLifetimeElapsed)
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("connection still open after the worker exited")
		}
	})
	t.Run("line too long", func(t *testing.T) {
		srv := newServer(t)
		_, res := start(t, opts(srv.addr()))
		c := srv.accept(t)
		writeAsync(t, c, strings.Repeat("y", MaxLineBytes+2))
		wantExit(t, result(t, res), ErrLineTooLong)
	})
}

func TestInvalidOptions(t *testing.T) {
	tests := map[string]func(*Options){
		"no address":        func(o *Options) { o.Addr = "" },
		"lifetime reversed": func(o *Options) { o.LifetimeMin, o.LifetimeMax = 2*time.Second, time.Second },
		"zero keep-alive":   func(o *Options) { o.KeepAliveMin = 0 },
		"zero timeout":      func(o *Options) { o.KeepAliveTimeout = 0 },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			o := opts("127.0.0.1:1")
			mutate(&o)
			err := Run(context.Background(), o, logging.Discard())
			var ee *ExitError
			if err == nil || errors.As(err, &ee) {
				t.Fatalf("Run returned %v, want an options error", err)
			}
		})
	}
}
