// Command chattyctl is the operator's tool for chattyd: it reads the
// daemon's status, sends typed messages, scales the worker pool, stops
// the daemon through its control socket, and watches the broadcast.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
