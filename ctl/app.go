package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/chatty-dev/chatty/internal/clientopts"
	"github.com/chatty-dev/chatty/internal/exitcode"
	"github.com/chatty-dev/chatty/internal/manpage"
	"github.com/chatty-dev/chatty/internal/pool/poolsize"
	"github.com/chatty-dev/chatty/internal/version"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// usagef returns a usage error: exit code 2.
func usagef(format string, args ...any) error { return exitcode.Usagef(format, args...) }

// run is chattyctl: it runs the command line args (args[0] is the
// program's name) and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	notFound := false
	app := newApp(stdout, stderr)
	app.CommandNotFound = func(c *cli.Context, name string) {
		notFound = true
		fmt.Fprintf(stderr, "chattyctl: unknown command %q; run 'chattyctl help' for the list\n", name)
	}
	err := app.RunContext(ctx, args)
	switch {
	case notFound:
		return exitcode.Usage
	case errors.Is(err, context.Canceled):
		return exitcode.Failure
	}
	return exitcode.Report(stderr, "chattyctl", err)
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "chattyctl",
		Usage:                "control a running chattyd",
		Description:          "chattyctl talks to chattyd through its control socket (see docs/control.md). Reading needs access to the socket; send, scale and stop need root, chattyd's own user or membership of its control group.",
		Version:              version.String(),
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideVersion:          true,
		ExitErrHandler:       func(*cli.Context, error) {}, // run decides the exit code
		OnUsageError:         onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q; run 'chattyctl help' for the list", c.Args().First())
			}
			_ = cli.ShowAppHelp(c)
			return usagef("no command given")
		},
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "socket",
				Usage:   "chattyd's control socket `PATH` (default: the config's control.socket, else " + control.SystemSocketPath + " or the per-user one)",
				EnvVars: []string{"CHATTY_SOCKET"},
			},
			&cli.StringFlag{
				Name:  "config",
				Usage: "read the socket path from this chattyd configuration `FILE`",
			},
			&cli.BoolFlag{
				Name:    "verbose",
				Aliases: []string{"v"},
				Usage:   "say which socket is used and more",
			},
			cli.HelpFlag, // added by hand: our own help command stops urfave/cli adding it
		},
		Commands: []*cli.Command{
			{
				Name:      "status",
				Usage:     "show the daemon's state: feed, clients and worker pool",
				ArgsUsage: " ",
				Flags:     []cli.Flag{jsonFlag},
				Action:    cmdStatus,
			},
			{
				Name:      "clients",
				Usage:     "list the broadcaster's connected clients",
				ArgsUsage: " ",
				Flags:     []cli.Flag{jsonFlag},
				Action:    cmdClients,
			},
			{
				Name:      "workers",
				Usage:     "list the worker pool's slots",
				ArgsUsage: " ",
				Flags:     []cli.Flag{jsonFlag},
				Action:    cmdWorkers,
			},
			{
				Name:      "identity",
				Usage:     "print the daemon's public key and its fingerprint",
				ArgsUsage: " ",
				Description: "The public key is an OpenSSH authorized_keys line; save it to a file to verify " +
					"what chattyd's signed listener sends.",
				Flags:  []cli.Flag{jsonFlag},
				Action: cmdIdentity,
			},
			{
				Name:      "send",
				Usage:     "broadcast a typed message to every client",
				ArgsUsage: "TYPE MESSAGE...",
				UsageText: "chattyctl send TYPE MESSAGE...\n\n" +
					"TYPE is one of " + typeList() + " (any case).\n" +
					"The words of MESSAGE are joined with spaces; it must be one line,\n" +
					"at most " + strconv.Itoa(message.MaxTextBytes) + " bytes, without control characters other than tab.",
				Action: cmdSend,
				BashComplete: func(c *cli.Context) {
					if c.NArg() == 1 && c.Args().First() == "-" {
						cli.DefaultCompleteWithFlags(c.Command)(c) // see completion.go
						return
					}
					if c.NArg() == 0 {
						for _, t := range message.Types() {
							fmt.Fprintln(c.App.Writer, t)
						}
					}
				},
			},
			{
				Name:      "scale",
				Usage:     "set the number of workers",
				ArgsUsage: "N",
				// N is read by cmdScale, flags and all, so that "scale -1"
				// is refused as a number out of range, not as an unknown
				// flag "-1".
				SkipFlagParsing: true,
				Action:          cmdScale,
			},
			{
				Name:      "deadletters",
				Usage:     "list the work queue's poison lines (broadcast.delivery: one)",
				ArgsUsage: " ",
				Description: "A poison line is one whose deliveries ended max_deliveries times without an ack " +
					"(its worker died, was lost, timed out or acknowledged a different length). It is set aside, " +
					"and the lines behind it flow; chattyctl retry SEQ queues it again.",
				Flags:  []cli.Flag{jsonFlag},
				Action: cmdDeadLetters,
			},
			{
				Name:      "retry",
				Usage:     "queue a poison line of the work queue again",
				ArgsUsage: "SEQ",
				UsageText: "chattyctl retry SEQ\n\nSEQ is the sequence number chattyctl deadletters shows.",
				Action:    cmdRetry,
			},
			{
				Name:      "stop",
				Usage:     "stop the daemon and wait until it is gone",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "no-wait", Usage: "return as soon as the daemon has accepted the request"},
					&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "how long to wait for the daemon to go"},
				},
				Action: cmdStop,
			},
			{
				Name:      "watch",
				Usage:     "connect to the broadcaster as a client and print every line",
				ArgsUsage: " ",
				Description: "watch sends KEEP_ALIVE every --keepalive (its answers are not printed) and no " +
					"acknowledgement. A daemon closes it, like a worker, only if it stops keeping alive for " +
					"broadcast.idle_timeout; with --keepalive 0 it sends nothing, and the daemon keeps it " +
					"for as long as its TCP peer is alive.\n\n" +
					"When standard output is a terminal, control characters in what is received are shown " +
					"escaped, the way journalctl and less show them (ESC as \\x1b, a C1 control such as " +
					"U+009B as \\u009b, a byte that is not UTF-8 as \\xff); tab and the line ends are kept. " +
					"Otherwise, in a pipe or into a file, the bytes are written unchanged.\n\n" +
					"watch exits 0 when interrupted or when nobody reads its output any more (watch | head), " +
					"and 1 when chattyd closes the connection, saying why when it knows.\n\n" +
					"With --from, --since or --state, watch reads the sequenced listener " +
					"(broadcast.sequenced.listen) and can start in the past, from the lines chattyd retains " +
					"(broadcast.retain). Lines no longer retained, and a chattyd restarted since (a new " +
					"stream, whose numbers start again), are told on standard error. --state FILE records " +
					"the stream and number of the last line printed, replaced whole after every read, so " +
					"that watch started again with the same FILE goes on after that line; a watch that was " +
					"killed may print the lines of its last read again. With --signed, --from, --since and " +
					"--state resume the signed listener the same way: chattyd answers with a signed " +
					"RESUMED, so a gap or a new stream is told under its signature, and every message is " +
					"verified as on a fresh connection.",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "addr", Usage: "broadcaster's host:port (default: the first listener in status of the protocol watched)"},
					&cli.BoolFlag{Name: "signed", Usage: "watch the signed listener and print only messages that verify"},
					&cli.StringFlag{Name: "pubkey", Usage: "the daemon's public key `FILE` (.pub or PEM); required with --signed"},
					&cli.DurationFlag{Name: "keepalive", Value: 15 * time.Second,
						Usage: "send KEEP_ALIVE this often on the text protocol; 0 sends none"},
					&cli.StringFlag{Name: "from", Usage: "on the sequenced or signed listener, start at line `SEQ`, or first (the oldest retained), or next"},
					&cli.DurationFlag{Name: "since", Usage: "on the sequenced or signed listener, start with the lines of the last `DURATION` (such as 5m) still retained"},
					&cli.StringFlag{Name: "state", Usage: "on the sequenced or signed listener, record the last line printed in `FILE` and, started again, continue after it"},
				}, clientopts.Flags()...),
				Action: cmdWatch,
			},
			topCommand,
			{
				Name:      "version",
				Usage:     "print chattyctl's version, and chattyd's if it answers",
				ArgsUsage: " ",
				Action:    cmdVersion,
			},
			{
				Name:      "completion",
				Usage:     "print a shell completion script (bash or zsh)",
				ArgsUsage: "bash|zsh",
				UsageText: "source <(chattyctl completion bash)    # or zsh, in ~/.zshrc after compinit",
				Action:    cmdCompletion,
			},
			{
				// Our own help command: urfave/cli's is a package-level
				// value that running it mutates into a cycle, which hangs
				// a later ToMan in the same process (the tests).
				Name:      "help",
				Aliases:   []string{"h"},
				Usage:     "show the commands, or one command's help",
				ArgsUsage: "[command]",
				HideHelp:  true,
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return cli.ShowAppHelp(c)
					}
					return cli.ShowCommandHelp(c, c.Args().First())
				},
			},
			{
				Name:   "man",
				Usage:  "print chattyctl's manual page (roff)",
				Hidden: true,
				Action: func(c *cli.Context) error {
					page, err := manpage.Page(c.App, 1)
					if err != nil {
						return err
					}
					_, err = io.WriteString(c.App.Writer, page)
					return err
				},
			},
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = onUsageError
		cmd.HideHelpCommand = true
	}
	app.UsageText = manpage.Synopsis(app, false)
	return app
}

// onUsageError makes urfave/cli's flag errors usage errors (exit code 2).
func onUsageError(c *cli.Context, err error, _ bool) error {
	where := "chattyctl help"
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		where += " " + c.Command.Name
	}
	return usagef("%v; run '%s' for usage", err, where)
}

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print the answer as JSON"}

func typeList() string {
	names := make([]string, 0, 7)
	for _, t := range message.Types() {
		names = append(names, t.String())
	}
	return strings.Join(names, ", ")
}

// noArgs refuses arguments to a command that takes none.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("%s: unexpected argument %q", c.Command.Name, c.Args().First())
	}
	return nil
}

// socketPath chooses the control socket: --socket (or CHATTY_SOCKET), the
// configuration's control.socket, or the default for this user, falling
// back to the system daemon's socket if the user has none.
func socketPath(c *cli.Context) (string, error) {
	if p := c.String("socket"); p != "" {
		return p, nil
	}
	if file := c.String("config"); file != "" {
		p, err := configSocket(file, c.App.ErrWriter)
		if err != nil {
			return "", err
		}
		if p != "" {
			return p, nil
		}
	}
	p := control.DefaultSocketPath()
	if p != control.SystemSocketPath {
		if _, err := os.Stat(p); err != nil {
			if _, err := os.Stat(control.SystemSocketPath); err == nil {
				return control.SystemSocketPath, nil
			}
		}
	}
	return p, nil
}

func newClient(c *cli.Context) (*client.Client, error) {
	p, err := socketPath(c)
	if err != nil {
		return nil, err
	}
	verbosef(c, "control socket %s", p)
	return client.New(p), nil
}

func verbosef(c *cli.Context, format string, args ...any) {
	if c.Bool("verbose") {
		fmt.Fprintf(c.App.ErrWriter, "chattyctl: "+format+"\n", args...)
	}
}

func cmdSend(c *cli.Context) error {
	if c.NArg() < 2 {
		return usagef("send: want a type and a message, as in: chattyctl send warning disk almost full")
	}
	typ, err := message.ParseType(c.Args().First())
	if err != nil {
		return usagef("send: %v", err)
	}
	// The text is checked here as chattyd would, so that a text it would
	// refuse is a usage error sent nowhere.
	m := message.Message{Type: typ, Text: strings.Join(c.Args().Tail(), " ")}
	if err := m.Validate(); err != nil {
		return usagef("send: %v", err)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	resp, err := cl.Send(c.Context, control.SendRequest{Type: typ.String(), Message: m.Text})
	if err != nil {
		return err
	}
	verbosef(c, "sent as line %d", resp.Seq)
	fmt.Fprintln(c.App.Writer, resp.Line)
	return nil
}

func cmdDeadLetters(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	ds, err := cl.DeadLetters(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, ds)
	}
	return printDeadLetters(c.App.Writer, ds)
}

func cmdRetry(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("retry: want one sequence number, as chattyctl deadletters shows it")
	}
	seq, err := strconv.ParseUint(c.Args().First(), 10, 64)
	if err != nil || seq == 0 {
		return usagef("retry: want a sequence number from 1 up, got %q", c.Args().First())
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	resp, err := cl.Retry(c.Context, seq)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "line %d queued again\n", resp.Seq)
	return nil
}

func cmdScale(c *cli.Context) error {
	// Flags are not parsed (SkipFlagParsing): take the help flags and a
	// "--" by hand.
	args := c.Args().Slice()
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	} else if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		return cli.ShowSubcommandHelp(c)
	}
	if len(args) != 1 {
		return usagef("scale: want a whole number from 0 to %d", poolsize.Max)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 || n > poolsize.Max {
		return usagef("scale: want a whole number from 0 to %d, got %q", poolsize.Max, args[0])
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	resp, err := cl.Scale(c.Context, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "workers: %d -> %d\n", resp.Old, resp.New)
	return nil
}

// pollInterval is how often stop checks whether the daemon is gone.
const pollInterval = 50 * time.Millisecond

func cmdStop(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	if c.Bool("no-wait") {
		if err := cl.Stop(c.Context); err != nil {
			return err
		}
		fmt.Fprintln(c.App.Writer, "chattyd is stopping")
		return nil
	}
	// Who is asked to stop: under socket activation a new connection to
	// the socket starts a new chattyd, so stop must not wait by
	// connecting again when it can watch the process itself.
	before, err := cl.Status(c.Context)
	if err != nil {
		return err
	}
	exited := watchExit(before.PID)
	if exited != nil {
		defer exited.Close()
	}
	if err := cl.Stop(c.Context); err != nil {
		return err
	}
	timeout := c.Duration("timeout")
	ctx, cancel := context.WithTimeout(c.Context, timeout)
	defer cancel()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		if exited != nil {
			if exited.Done() {
				fmt.Fprintln(c.App.Writer, "chattyd stopped")
				return nil
			}
			verbosef(c, "chattyd (pid %d) still runs", before.PID)
		} else {
			st, err := cl.Status(ctx)
			var ce *client.ConnError
			if errors.As(err, &ce) && ce.NotRunning() {
				fmt.Fprintln(c.App.Writer, "chattyd stopped")
				return nil
			}
			if err == nil && (st.PID != before.PID || !st.StartedAt.Equal(before.StartedAt)) {
				fmt.Fprintln(c.App.Writer, "chattyd stopped; another one answers now (started by socket activation?)")
				return nil
			}
			verbosef(c, "chattyd still answers (%v)", err)
		}
		select {
		case <-ctx.Done():
			if c.Context.Err() != nil {
				return c.Context.Err()
			}
			return fmt.Errorf("chattyd at %s still runs %s after it accepted to stop", cl.Path(), timeout)
		case <-t.C:
		}
	}
}

// exitWatch tells when one process has exited, through a pidfd.
type exitWatch struct{ fd int }

// watchExit returns a watch on the chattyd with the given PID, or nil when
// that PID is not a chattyd this process can see (another PID namespace,
// an old daemon that does not report its PID, no pidfd support).
func watchExit(pid int) *exitWatch {
	if pid <= 0 {
		return nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil
	}
	// Checked after opening the pidfd, so that the PID cannot be reused
	// in between.
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "chattyd" {
		unix.Close(fd)
		return nil
	}
	return &exitWatch{fd: fd}
}

// Done reports whether the process has exited.
func (w *exitWatch) Done() bool {
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// Close releases the pidfd.
func (w *exitWatch) Close() { unix.Close(w.fd) }

func cmdVersion(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "chattyctl %s (%s)\n", version.String(), runtime.Version())
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
	defer cancel()
	if st, err := cl.Status(ctx); err == nil {
		fmt.Fprintf(c.App.Writer, "chattyd %s at %s\n", st.Version, cl.Path())
	} else {
		verbosef(c, "no daemon version: %v", err)
	}
	return nil
}
