// Command chattyd broadcasts a feed of lines to TCP clients and supervises
// a pool of workers that connect back to it. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/chatty-dev/chatty/pkg/activation"
	"github.com/chatty-dev/chatty/pkg/config"
	"github.com/chatty-dev/chatty/pkg/daemon"
	"github.com/chatty-dev/chatty/pkg/feed"
	"github.com/chatty-dev/chatty/pkg/logging"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

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
		Version:   daemon.Version,
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
		ExitErrHandler: func(*cli.Context, error) {},
	}
	if err := app.Run(args); err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(stderr, "chattyd:", msg)
			}
			return ec.ExitCode()
		}
		fmt.Fprintln(stderr, "chattyd:", err)
		return 2 // urfave/cli's own errors are usage errors
	}
	return 0
}

func daemonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "YAML configuration `FILE` (default: the built-in configuration)", EnvVars: []string{"CHATTYD_CONFIG"}},
		&cli.BoolFlag{Name: "demo", Usage: "use the built-in demo configuration (a few short-lived workers) instead of the default"},
		&cli.StringFlag{Name: "listen", Usage: "broadcast on `HOST:PORT` (overrides broadcast.listen)"},
		&cli.StringFlag{Name: "ip", Usage: "broadcast on this `IP`, keeping the port (the original server's -ip)"},
		&cli.IntFlag{Name: "port", Usage: "broadcast on this `PORT`, keeping the address (the original server's -port)"},
		&cli.IntFlag{Name: "workers", Usage: "run `N` workers (overrides pool.size; 0 runs none)"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log at debug level, every line in and out"},
		&cli.StringFlag{Name: "log-format", Usage: "log format: text or json (overrides log.format)"},
		&cli.StringFlag{Name: "control-socket", Usage: "control socket `PATH` (overrides control.socket; default /run/chattyd/control.sock as root, $XDG_RUNTIME_DIR/chattyd/control.sock otherwise)"},
	}
}

// loadConfig reads the configuration named by --config (or the built-in
// one) and applies the command-line overrides.
func loadConfig(c *cli.Context) (config.Config, error) {
	var cfg config.Config
	var err error
	switch {
	case c.Bool("demo") && c.IsSet("config"):
		return cfg, cli.Exit("--demo and --config exclude each other: the demo has its own configuration", 2)
	case c.Bool("demo"):
		cfg, err = config.Parse("(built-in demo)", config.DemoYAML)
	default:
		cfg, err = config.Load(c.String("config"))
	}
	if err != nil {
		return cfg, err
	}
	if err := applyFlags(c, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// applyFlags overrides configuration values with the flags that were set.
func applyFlags(c *cli.Context, cfg *config.Config) error {
	if c.IsSet("listen") {
		cfg.Broadcast.Listen = c.String("listen")
	}
	if c.IsSet("ip") || c.IsSet("port") {
		host, port, err := net.SplitHostPort(cfg.Broadcast.Listen)
		if err != nil {
			return fmt.Errorf("--ip/--port: the address %q has no port to combine with: %w", cfg.Broadcast.Listen, err)
		}
		if c.IsSet("ip") {
			if net.ParseIP(c.String("ip")) == nil {
				return cli.Exit(fmt.Sprintf("--ip %q is not an IP address", c.String("ip")), 2)
			}
			host = c.String("ip")
		}
		if c.IsSet("port") {
			p := c.Int("port")
			if p < 0 || p > 65535 {
				return cli.Exit(fmt.Sprintf("--port %d is not a port number (0 to 65535)", p), 2)
			}
			port = strconv.Itoa(p)
		}
		cfg.Broadcast.Listen = net.JoinHostPort(host, port)
	}
	if c.IsSet("workers") {
		cfg.Pool.Size = c.Int("workers")
	}
	if c.Bool("verbose") {
		cfg.Log.Level = "debug"
	}
	if c.IsSet("log-format") {
		cfg.Log.Format = c.String("log-format")
	}
	if c.IsSet("control-socket") {
		cfg.Control.Socket = c.String("control-socket")
	}
	if ps := cfg.Validate(); len(ps) > 0 {
		return &config.Error{File: "command-line flags", Problems: ps}
	}
	return nil
}

func runDaemon(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("unexpected argument %q; see chattyd --help", c.Args().First()), 2)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	logger, logFile, err := newLogger(cfg.Log, c.App.ErrWriter)
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	if logFile != nil {
		defer logFile.Close()
	}

	passed, err := activation.FromSystemd()
	if err != nil {
		logger.WithError(err).Error("Cannot use the descriptors systemd passed")
		return cli.Exit("", 1)
	}
	opts := daemon.Options{
		Config:          cfg,
		Reload:          func() (config.Config, error) { return reloadConfig(c) },
		Logger:          logger,
		LogFile:         logFile,
		Notifier:        daemon.SystemdNotifier{NoWatchdog: os.Getenv("CHATTYD_TEST_NO_WATCHDOG") == "1"},
		Listener:        passed.Broadcast,
		ControlListener: passed.Control,
	}
	if exe, err := os.Executable(); err == nil {
		opts.WorkerCommand = func(w config.Worker, sw *daemon.SignedWorker) []string { return DefaultWorkerCommand(exe, w, sw) }
		opts.GuardCommand = guardArgs(exe)
	} else if len(cfg.Pool.Command) == 0 && cfg.Pool.Size > 0 {
		logger.WithError(err).Error("Cannot find chattyd's own executable for the built-in worker; set pool.command")
		return cli.Exit("", 1)
	}
	if passed.Feed != nil {
		opts.Feed = feed.NewFile("fifo (systemd)", passed.Feed, cfg.Feed.MaxLineBytes,
			logger.WithField(logging.FieldComponent, "feed").WithField(logging.FieldScope, "feed"))
	}
	d, err := daemon.New(opts)
	if err != nil {
		passed.Close()
		logger.WithError(err).Error("Cannot start")
		return cli.Exit("", 1)
	}
	logger.Info("=== Chatty Server ===")
	if err := d.Run(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
		return cli.Exit("", 1)
	}
	return nil
}

// reloadConfig is the SIGHUP path: the file again, with the same flags.
func reloadConfig(c *cli.Context) (config.Config, error) {
	if c.String("config") == "" {
		return config.Config{}, errors.New("no --config file to reload; chattyd runs on its built-in configuration")
	}
	return loadConfig(c)
}

func newLogger(lc config.Log, stderr io.Writer) (*logrus.Logger, *logging.File, error) {
	logger := logrus.New()
	logger.SetOutput(stderr)
	level, err := logging.ParseLevel(lc.Level)
	if err != nil {
		return nil, nil, err
	}
	logger.SetLevel(level)
	var lf *logging.File
	if lc.File != "" {
		if lf, err = logging.OpenFile(lc.File); err != nil {
			return nil, nil, err
		}
		logger.SetOutput(lf)
	}
	journal := lc.File == "" && logging.UnderJournal()
	if err := logging.SetFormat(logger, lc.Format, journal); err != nil {
		return nil, nil, err
	}
	return logger, lf, nil
}

// manCommand prints chattyd's manual page, generated from its flags and
// commands; the package ships it as chattyd(8).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print chattyd's manual page (roff)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(8)
			if err != nil {
				return cli.Exit("make manual page: "+err.Error(), 1)
			}
			_, err = io.WriteString(c.App.Writer, page)
			return err
		},
	}
}

func checkConfigCommand() *cli.Command {
	return &cli.Command{
		Name:      "check-config",
		Usage:     "validate a configuration file and report every error",
		ArgsUsage: "[FILE]",
		Action: func(c *cli.Context) error {
			path := c.Args().First()
			if path == "" {
				path = c.String("config")
			}
			if path == "" {
				return cli.Exit("check-config: name a file (chattyd check-config FILE or --config FILE)", 2)
			}
			if _, err := config.Load(path); err != nil {
				return cli.Exit(err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "%s: configuration is valid\n", path)
			return nil
		},
	}
}

func printConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "print-config",
		Usage: "print the effective configuration (file, defaults and flags) as YAML",
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			enc := yaml.NewEncoder(c.App.Writer)
			enc.SetIndent(2)
			if err := enc.Encode(cfg); err != nil {
				return cli.Exit(err.Error(), 1)
			}
			return enc.Close()
		},
	}
}
