package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/urfave/cli/v2"
)

// cmdWatch connects to the broadcaster as a plain client and copies what
// it receives to stdout, byte for byte. It sends nothing: no keep-alive,
// no acknowledgement. It ends when the daemon closes the connection
// (exit 0) or on interrupt.
func cmdWatch(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	addr := c.String("addr")
	if addr == "" {
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		st, err := cl.Status(c.Context)
		if err != nil {
			return fmt.Errorf("find the broadcaster's address (or give --addr): %w", err)
		}
		for _, l := range st.Listeners {
			if l.Protocol == "tcp" || l.Protocol == "" {
				addr = l.Addr
				break
			}
		}
		if addr == "" {
			return errors.New("chattyd reports no TCP listener; give --addr")
		}
	}
	verbosef(c, "watching %s", addr)
	return watch(c.Context, addr, c.App.Writer, c.App.ErrWriter)
}

func watch(ctx context.Context, addr string, out, errOut io.Writer) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to end a watch
	}
	if err != nil {
		return fmt.Errorf("connect to the broadcaster: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_, err = io.Copy(out, conn)
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to end a watch
	}
	if err != nil {
		return fmt.Errorf("watch %s: %w", addr, err)
	}
	fmt.Fprintf(errOut, "chattyctl: %s closed the connection\n", addr)
	return nil
}
