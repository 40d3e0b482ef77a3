package main

import (
	"bufio"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chatty-dev/chatty/internal/config"
)

// TestDefaultWorkerCommandRuns checks that the pool's default command is
// understood by the worker subcommand, which acks and exits with code 2
// when its lifetime is over.
func TestDefaultWorkerCommandRuns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	w := config.Default().Pool.Worker
	w.LifetimeMin, w.LifetimeMax = 300*time.Millisecond, 300*time.Millisecond
	args := DefaultWorkerCommand("chattyd", w, nil)
	r := strings.NewReplacer("{addr}", ln.Addr().String(), "{slot}", "7")
	for i := range args {
		args[i] = r.Replace(args[i])
	}

	var exitErr error
	app := &cli.App{
		Name:           "chattyd",
		Commands:       []*cli.Command{workerCommand()},
		ExitErrHandler: func(_ *cli.Context, err error) { exitErr = err },
	}
	res := make(chan error, 1)
	go func() { res <- app.Run(args) }()

	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("the worker did not connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("2024-07-06 02:19:04 WPEEo9bG5nnnS/tkKyiJMDf3LJJ3fiPE\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ACK_RECEIVED 52\n" {
		t.Fatalf("worker answered %q, %v; want ACK_RECEIVED 52", line, err)
	}

	select {
	case <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not exit after its lifetime")
	}
	var ec cli.ExitCoder
	if !errors.As(exitErr, &ec) || ec.ExitCode() != 2 {
		t.Fatalf("worker ended with %v, want exit code 2", exitErr)
	}
}
