package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// minTopInterval bounds --interval from below, to spare the daemon.
const minTopInterval = 100 * time.Millisecond

// topRequestTimeout bounds one sample's requests.
const topRequestTimeout = 5 * time.Second

var topCommand = &cli.Command{
	Name:      "top",
	Usage:     "a live view of the feed rate, clients, workers and events",
	ArgsUsage: " ",
	Description: "top asks the control socket for the status and the clients every --interval and redraws " +
		"the terminal: the feed rate with a sparkline of the last minute, the counters, the clients (the most " +
		"behind first), the worker slots and the events seen between two answers (restarts, refusals, slow " +
		"consumers, clients coming and going). q or Ctrl-C quits. When stdout is no terminal it prints one " +
		"line per interval instead, and each event on a line of its own.",
	Flags: []cli.Flag{
		&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "time between two samples (at least 100ms)"},
		&cli.BoolFlag{Name: "once", Usage: "take two samples --interval apart, print one view and exit"},
	},
	Action: cmdTop,
}

// topSource is what top reads: the control API's client.
type topSource interface {
	Status(ctx context.Context) (control.Status, error)
	Clients(ctx context.Context) ([]control.Client, error)
}

func cmdTop(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	interval := c.Duration("interval")
	if interval < minTopInterval {
		return usagef("top: --interval must be at least %s, got %s", minTopInterval, interval)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	t := &topRun{src: cl, interval: interval, model: topModel{socket: cl.Path()}, out: c.App.Writer}
	// The first answer decides: a daemon that does not answer is an error
	// before anything is drawn.
	first := t.sample(c.Context)
	if first.err != nil {
		return first.err
	}
	t.model.update(first)
	out, _ := c.App.Writer.(*os.File)
	term := out != nil && isTerminalFD(int(out.Fd()))
	switch {
	case c.Bool("once"):
		return t.once(c.Context, term)
	case term:
		return t.screen(c.Context, int(out.Fd()), int(os.Stdin.Fd()))
	default:
		return t.plain(c.Context)
	}
}

// topRun is one run of top: where it samples, what it remembers and where
// it draws.
type topRun struct {
	src      topSource
	interval time.Duration
	model    topModel
	out      io.Writer
	printed  int // events printed by plain, of model.total
}

// sample asks for the status and the clients.
func (t *topRun) sample(ctx context.Context) topSample {
	ctx, cancel := context.WithTimeout(ctx, topRequestTimeout)
	defer cancel()
	st, err := t.src.Status(ctx)
	var cs []control.Client
	if err == nil {
		cs, err = t.src.Clients(ctx)
	}
	return topSample{at: time.Now(), status: st, clients: cs, err: err}
}

// wait waits one interval; it reports false when ctx is done first.
func (t *topRun) wait(ctx context.Context) bool {
	timer := time.NewTimer(t.interval)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// once prints one view after a second sample: the screen as plain lines
// on a terminal, else the plain line and the events.
func (t *topRun) once(ctx context.Context, term bool) error {
	if !t.wait(ctx) {
		return nil
	}
	t.model.update(t.sample(ctx))
	if !term {
		return t.printPlain()
	}
	w, h := terminalSize(int(t.out.(*os.File).Fd()))
	_, err := fmt.Fprintln(t.out, strings.Join(t.model.frame(time.Now(), w, h), "\n"))
	return err
}

// plain prints one line per interval until ctx is done.
func (t *topRun) plain(ctx context.Context) error {
	for {
		if err := t.printPlain(); err != nil {
			return err
		}
		if !t.wait(ctx) {
			return nil
		}
		t.model.update(t.sample(ctx))
		if ctx.Err() != nil {
			return nil
		}
	}
}

// printPlain prints the events not printed yet, then the plain line.
func (t *topRun) printPlain() error {
	var b strings.Builder
	fresh := min(t.model.total-t.printed, len(t.model.events))
	for _, e := range t.model.events[len(t.model.events)-fresh:] {
		fmt.Fprintf(&b, "%s event: %s\n", e.at.UTC().Format(time.RFC3339), e.text)
	}
	t.printed = t.model.total
	b.WriteString(t.model.plainLine(time.Now()))
	b.WriteByte('\n')
	if _, err := io.WriteString(t.out, b.String()); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// The terminal sequences top uses.
const (
	altScreenOn  = "\x1b[?1049h"
	altScreenOff = "\x1b[?1049l"
	cursorHide   = "\x1b[?25l"
	cursorShow   = "\x1b[?25h"
	cursorHome   = "\x1b[H"
	clearLine    = "\x1b[K" // to the end of the line
	clearBelow   = "\x1b[J" // to the end of the screen
	clearScreen  = "\x1b[2J"
)

// screen draws on the terminal out until q or Ctrl-C is typed on in (if
// in is a terminal) or ctx is done, then restores the terminal: the
// cursor, the main screen and in's mode, however it ends.
func (t *topRun) screen(ctx context.Context, out, in int) (err error) {
	ctx, quit := context.WithCancel(ctx)
	defer quit()
	if _, err := io.WriteString(t.out, altScreenOn+cursorHide+cursorHome+clearScreen); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	defer func() {
		if _, werr := io.WriteString(t.out, cursorShow+altScreenOff); werr != nil && err == nil {
			err = fmt.Errorf("write: %w", werr)
		}
	}()
	if restore, ok := cbreak(in); ok {
		defer restore()
		var keys sync.WaitGroup
		keys.Go(func() { readKeys(ctx, in, quit) })
		// quit first, so that readKeys sees it and returns.
		defer keys.Wait()
		defer quit()
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	defer signal.Stop(winch)

	ticker := time.NewTicker(t.interval)
	defer ticker.Stop()
	var frame bytes.Buffer
	for {
		w, h := terminalSize(out)
		frame.Reset()
		drawFrame(&frame, t.model.frame(time.Now(), w, h))
		if _, err := t.out.Write(frame.Bytes()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-winch:
		case <-ticker.C:
			s := t.sample(ctx)
			if ctx.Err() != nil {
				return nil
			}
			t.model.update(s)
		}
	}
}

// drawFrame writes the sequences that draw lines over the previous frame:
// home the cursor, each line followed by a clearing of what remains of
// the old one, then a clearing of the rows below.
func drawFrame(b *bytes.Buffer, lines []string) {
	b.WriteString(cursorHome)
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString(l)
		b.WriteString(clearLine)
	}
	b.WriteString(clearBelow)
}

// readKeys reads in until ctx is done, calling quit on q or Ctrl-C. It
// polls, so that it notices ctx within a tenth of a second.
func readKeys(ctx context.Context, in int, quit func()) {
	buf := make([]byte, 64)
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(in), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if errors.Is(err, unix.EINTR) || (err == nil && n == 0) {
			continue
		}
		if err != nil || fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 && fds[0].Revents&unix.POLLIN == 0 {
			return // no more keys; signals still end top
		}
		n, err = unix.Read(in, buf)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil || n == 0 {
			return
		}
		if bytes.ContainsAny(buf[:n], "qQ\x03") {
			quit()
			return
		}
	}
}

// cbreak puts the terminal fd in a mode where each key is read as typed,
// without echo, and Ctrl-C is a key rather than a signal (output is left
// as it was). It returns what restores the mode, and false when fd is no
// terminal.
func cbreak(fd int) (restore func(), ok bool) {
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, false
	}
	t := *saved
	t.Lflag &^= unix.ICANON | unix.ECHO | unix.ISIG | unix.IEXTEN
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, false
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, saved) }, true
}

// terminalSize returns the terminal's columns and rows, 80x24 when it
// does not say.
func terminalSize(fd int) (width, height int) {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 || ws.Row == 0 {
		return 80, 24
	}
	return int(ws.Col), int(ws.Row)
}
