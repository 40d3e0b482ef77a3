package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/chatty-dev/chatty/internal/demofeed"
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
		},
		Action: func(c *cli.Context) error {
			// A reader that goes away ends the feed quietly: get EPIPE
			// from the write instead of dying of SIGPIPE.
			signal.Ignore(syscall.SIGPIPE)
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
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
