package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/urfave/cli/v2"
)

// cmdWatch connects to the broadcaster as a plain client and copies what
// it receives to stdout, byte for byte. It sends nothing: no keep-alive,
// no acknowledgement. It ends when the daemon closes the connection
// (exit 0) or on interrupt. With --signed it reads the signed listener and
// prints only the messages that verified with --pubkey, one per line.
func cmdWatch(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	var pub ed25519.PublicKey
	protocol := "tcp"
	switch {
	case c.Bool("signed") && c.String("pubkey") == "":
		return usagef("watch: --signed needs --pubkey FILE, the daemon's public key (see chattyctl identity)")
	case c.Bool("signed"):
		var err error
		if pub, err = identity.LoadPublicKey(c.String("pubkey")); err != nil {
			return err
		}
		protocol = "signed"
	case c.IsSet("pubkey"):
		return usagef("watch: --pubkey is for --signed")
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
			if l.Protocol == protocol || (protocol == "tcp" && l.Protocol == "") {
				addr = l.Addr
				break
			}
		}
		if addr == "" && protocol == "signed" {
			return errors.New("chattyd reports no signed listener (broadcast.signed.listen); give --addr")
		}
		if addr == "" {
			return errors.New("chattyd reports no TCP listener; give --addr")
		}
	}
	verbosef(c, "watching %s", addr)
	if pub != nil {
		return watchSigned(c.Context, addr, pub, c.App.Writer, c.App.ErrWriter)
	}
	return watch(c.Context, addr, c.App.Writer, c.App.ErrWriter)
}

// watchSigned reads a signed listener and prints every message that
// verified with pub, one per line (see appendWatched). A stream that fails
// verification ends it with an error; nothing unverified is printed.
func watchSigned(ctx context.Context, addr string, pub ed25519.PublicKey, out, errOut io.Writer) error {
	v, err := signed.NewVerifier(pub, signed.VerifierOptions{})
	if err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("connect to the signed listener: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	w := bufio.NewWriter(out)
	buf := make([]byte, 64<<10)
	var line []byte
	for {
		n, rerr := conn.Read(buf)
		ferr := v.Feed(buf[:n], func(m *signed.Message) {
			if m.Kind == signed.KindMessage || m.Kind == signed.KindChained {
				line = appendWatched(line[:0], m)
				w.Write(line)
			}
		})
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if ferr != nil {
			return fmt.Errorf("%s: the stream failed verification, stopped before it: %w", addr, ferr)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(rerr, io.EOF):
			if err := v.Close(); err != nil {
				return fmt.Errorf("%s: %w", addr, err)
			}
			fmt.Fprintf(errOut, "chattyctl: %s closed the connection\n", addr)
			return nil
		case rerr != nil:
			return fmt.Errorf("watch %s: %w", addr, rerr)
		}
	}
}

// appendWatched appends what watch --signed prints for a verified message:
// an Info message (a feed line) as its payload, a message of another type
// (chattyctl send) as the text line the text listener sends for it.
func appendWatched(dst []byte, m *signed.Message) []byte {
	if m.Type == message.Info {
		return append(append(dst, m.Payload...), '\n')
	}
	tm := message.Message{Type: m.Type, Text: string(m.Payload), Time: m.Time}
	return append(tm.AppendText(dst), '\n')
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
