// Command chattyd broadcasts a feed of lines to TCP clients and supervises
// a pool of workers that connect back to it. See README.md.
package main

import (
	"io"
	"os"

	"github.com/chatty-dev/chatty/internal/exitcode"
	"github.com/chatty-dev/chatty/internal/manpage"
	"github.com/chatty-dev/chatty/internal/version"
	"github.com/urfave/cli/v2"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run is chattyd: it runs the command line args (args[0] is the program's
// name) and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	// -v means verbose, as in the original server; the version is --version.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version"}
	app := &cli.App{
		Name:  "chattyd",
		Usage: "broadcast a feed of lines to TCP clients and supervise a worker pool",
		Description: "chattyd reads lines from its standard input or a FIFO and sends each one to every connected TCP client. " +
			"It supervises a pool of worker processes (chattyd itself, run as 'chattyd worker') that connect back and acknowledge every line, " +
			"and serves a control socket for chattyctl(1). SIGTERM or SIGINT stop it gracefully, SIGHUP reloads the configuration file " +
			"and SIGUSR1 reopens log.file. Under systemd it takes its sockets and feed FIFO by name (broadcast, control, feed), " +
			"notifies readiness and pings the watchdog; the package runs it as chattyd.service with /etc/chattyd/chattyd.yaml. " +
			"See /usr/share/doc/chatty/systemd.md.",
		Version:   version.String(),
		Writer:    stdout,
		ErrWriter: stderr,
		Flags:     daemonFlags(),
		Action:    runDaemon,
		Commands: []*cli.Command{
			checkConfigCommand(),
			printConfigCommand(),
			keygenCommand(),
			workerCommand(),
			guardCommand(),
			demoFeedCommand(),
			manCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run decides the exit code
		OnUsageError:   onUsageError,
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = onUsageError
	}
	app.UsageText = manpage.Synopsis(app, true)
	return exitcode.Report(stderr, "chattyd", app.Run(args))
}

// onUsageError makes urfave/cli's flag errors usage errors (exit code 2).
func onUsageError(c *cli.Context, err error, _ bool) error {
	where := "chattyd --help"
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		where = "chattyd " + c.Command.Name + " --help"
	}
	return exitcode.Usagef("%v; see %s", err, where)
}

// daemonFlags are the flags that override the configuration: global, and
// accepted after the commands that read the configuration too.
func daemonFlags() []cli.Flag {
	return []cli.Flag{
		configFlag(),
		&cli.BoolFlag{Name: "demo", Usage: "use the built-in demo configuration (a few short-lived workers) instead of the default"},
		&cli.StringFlag{Name: "listen", Usage: "broadcast on `HOST:PORT` (overrides broadcast.listen)"},
		&cli.StringFlag{Name: "ip", Usage: "broadcast on this `IP`, keeping the port (the original server's -ip)"},
		&cli.IntFlag{Name: "port", Usage: "broadcast on this `PORT`, keeping the address (the original server's -port)"},
		&cli.IntFlag{Name: "workers", Usage: "run `N` workers (overrides pool.size; 0 runs none)"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log at debug level, every line in and out"},
		&cli.StringFlag{Name: "log-format", Usage: "log `FORMAT`: text or json (overrides log.format)"},
		&cli.StringFlag{Name: "control-socket", Usage: "control socket `PATH` (overrides control.socket; default /run/chattyd/control.sock as root, $XDG_RUNTIME_DIR/chattyd/control.sock otherwise)"},
	}
}

// configFlag is --config, for the daemon and check-config alike.
func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "YAML configuration `FILE` (default: the built-in configuration)", EnvVars: []string{"CHATTYD_CONFIG"}}
}
