package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chatty-dev/chatty/internal/demofeed"
	"github.com/chatty-dev/chatty/internal/exitcode"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
)

// demoFeedCommand is "chattyd demo-feed": the original generate-data.sh,
// for piping into chattyd.
func demoFeedCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo-feed",
		Usage: "print demo feed lines (timestamp and random Base64) to stdout",
		Flags: []cli.Flag{
			&cli.Float64Flag{Name: "rate", Value: 8, Usage: "lines per second; 0 for as fast as possible"},
			&cli.IntFlag{Name: "count", Value: 0, Usage: "lines to print; 0 for no end"},
			&cli.IntFlag{Name: "wait-clients", Usage: "start once chattyd has `N` clients connected (its workers), asking its control socket; 0 starts at once"},
			&cli.DurationFlag{Name: "wait-timeout", Value: 15 * time.Second, Usage: "start anyway after this long without --wait-clients clients, saying so on stderr"},
			&cli.StringFlag{Name: "control-socket", Usage: "chattyd's control socket `PATH` for --wait-clients (default: chattyd's default, " + control.SystemSocketPath + " as root, $XDG_RUNTIME_DIR/chattyd/control.sock otherwise)"},
		},
		Action: func(c *cli.Context) error {
			// A reader that goes away ends the feed quietly: get EPIPE
			// from the write instead of dying of SIGPIPE.
			signal.Ignore(syscall.SIGPIPE)
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if n := c.Int("wait-clients"); n < 0 {
				return exitcode.Usagef("demo-feed: --wait-clients %d: want 0 (start at once) or a number of clients", n)
			} else if n > 0 {
				waitClients(ctx, c, n)
				if ctx.Err() != nil {
					return nil
				}
			}
			err := demofeed.Run(ctx, os.Stdout, demofeed.Options{Rate: c.Float64("rate"), Count: c.Int("count")})
			if errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EBADF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("demo-feed: %w", err)
			}
			return nil
		},
	}
}

// waitClients holds the feed back until chattyd, reached on its control
// socket, has n clients, so that the first lines reach the workers
// instead of nobody; after --wait-timeout it says so and lets it start.
func waitClients(ctx context.Context, c *cli.Context, n int) {
	path := c.String("control-socket")
	if path == "" {
		path = control.DefaultSocketPath()
	}
	cl := client.New(path)
	connected := func(ctx context.Context) (int, error) {
		st, err := cl.Status(ctx)
		return st.Clients.Connected, err
	}
	timeout := c.Duration("wait-timeout")
	ok, got, err := demofeed.WaitClients(ctx, connected, n, timeout, 100*time.Millisecond)
	if ok || ctx.Err() != nil {
		return
	}
	why := fmt.Sprintf("chattyd had %d", got)
	if err != nil {
		why = fmt.Sprintf("chattyd did not answer on %s: %v", path, err)
	}
	fmt.Fprintf(c.App.ErrWriter, "chattyd demo-feed: starting anyway after %s without %d clients connected (%s)\n", timeout, n, why)
}
