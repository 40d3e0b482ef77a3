package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/chatty-dev/chatty/internal/clientopts"
	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/daemon"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/worker"
)

// workerCommand is "chattyd worker": the built-in worker that the pool
// runs in each slot. It exits 0 when stopped by SIGTERM or SIGINT and
// worker.ExitRestart (2) when its life is over, as the original child did.
func workerCommand() *cli.Command {
	d := config.Default().Pool.Worker
	return &cli.Command{
		Name:  "worker",
		Usage: "run one built-in worker (normally started by the pool)",
		Description: "Connects to the broadcaster, answers every line with ACK_RECEIVED <length>,\n" +
			"sends KEEP_ALIVE at random intervals and exits with code 2 when its random\n" +
			"lifetime is over, the connection ends or a keep-alive goes unanswered.\n" +
			"SIGTERM or SIGINT stop it cleanly with code 0. It logs to stderr.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Usage: "broadcaster `HOST:PORT`", EnvVars: []string{"CHATTY_ADDR"}, Required: true},
			&cli.IntFlag{Name: "slot", Usage: "pool slot, for logs", EnvVars: []string{"CHATTY_SLOT"}},
			&cli.DurationFlag{Name: "lifetime-min", Value: d.LifetimeMin, Usage: "shortest lifetime"},
			&cli.DurationFlag{Name: "lifetime-max", Value: d.LifetimeMax, Usage: "longest lifetime"},
			&cli.DurationFlag{Name: "keepalive-min", Value: d.KeepAliveMin, Usage: "shortest wait between keep-alives"},
			&cli.DurationFlag{Name: "keepalive-max", Value: d.KeepAliveMax, Usage: "longest wait between keep-alives"},
			&cli.DurationFlag{Name: "keepalive-timeout", Value: d.KeepAliveTimeout, Usage: "how long the server has to answer a keep-alive"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log every keep-alive"},
			&cli.BoolFlag{Name: "signed", Usage: "speak the signed protocol: verify every frame, ack by sequence number, keep alive with PING"},
			&cli.StringFlag{Name: "pubkey", Usage: "the daemon's public key `FILE` (.pub or PEM), to verify with; required with --signed"},
		}, clientopts.Flags()...),
		Action: func(c *cli.Context) error {
			l := logrus.New()
			l.SetOutput(os.Stderr)
			// No timestamp: the pool logs each of these lines with its own.
			l.SetFormatter(logging.NewFormatter(false, true))
			if c.Bool("verbose") {
				l.SetLevel(logrus.DebugLevel)
			}
			opts := worker.Options{
				Addr:             c.String("addr"),
				Slot:             c.Int("slot"),
				LifetimeMin:      c.Duration("lifetime-min"),
				LifetimeMax:      c.Duration("lifetime-max"),
				KeepAliveMin:     c.Duration("keepalive-min"),
				KeepAliveMax:     c.Duration("keepalive-max"),
				KeepAliveTimeout: c.Duration("keepalive-timeout"),
			}
			if c.Bool("signed") {
				if c.String("pubkey") == "" {
					return cli.Exit("chattyd worker: --signed needs --pubkey FILE, the daemon's public key", 2)
				}
				pub, err := identity.LoadPublicKey(c.String("pubkey"))
				if err != nil {
					return cli.Exit("chattyd worker: "+err.Error(), 1)
				}
				opts.PublicKey = pub
			} else if c.IsSet("pubkey") {
				return cli.Exit("chattyd worker: --pubkey is for --signed", 2)
			}
			if err := clientOptions(c, &opts); err != nil {
				var ue *clientopts.UsageError
				if errors.As(err, &ue) {
					return cli.Exit("chattyd worker: "+err.Error(), 2)
				}
				return cli.Exit("chattyd worker: "+err.Error(), 1)
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			err := worker.Run(ctx, opts, logrus.NewEntry(l).WithField(logging.FieldComponent, "worker"))
			var ee *worker.ExitError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &ee):
				return cli.Exit("", ee.Code) // Run has logged why
			default:
				return cli.Exit("chattyd worker: "+err.Error(), 1)
			}
		},
	}
}

// clientOptions sets the worker's TLS configuration and key from flags.
func clientOptions(c *cli.Context, opts *worker.Options) error {
	cfg, err := clientopts.TLS(c, opts.Addr)
	if err != nil {
		return err
	}
	opts.TLS = cfg
	key, err := clientopts.Key(c)
	if err != nil {
		return err
	}
	if key != nil && opts.PublicKey == nil {
		return clientopts.Usagef("--identity and --credentials-fd are for --signed")
	}
	opts.Key = key
	return nil
}

// DefaultWorkerCommand is the pool's command when pool.command is not set:
// exe (chattyd itself, from os.Executable) re-run as "chattyd worker" with
// w's timings. The pool replaces {addr} and {slot}; no shell is involved.
// A non-nil sw makes the worker speak the signed protocol, verifying with
// the daemon's public key (never the private one), over TLS pinned to that
// key if sw.TLS; its key to authenticate with, if any, comes through the
// pool's credentials pipe, which the worker finds by its environment.
func DefaultWorkerCommand(exe string, w config.Worker, sw *daemon.SignedWorker) []string {
	args := []string{
		exe, "worker",
		"--addr", "{addr}",
		"--slot", "{slot}",
		"--lifetime-min", w.LifetimeMin.String(),
		"--lifetime-max", w.LifetimeMax.String(),
		"--keepalive-min", w.KeepAliveMin.String(),
		"--keepalive-max", w.KeepAliveMax.String(),
		"--keepalive-timeout", w.KeepAliveTimeout.String(),
	}
	if sw != nil {
		args = append(args, "--signed", "--pubkey", sw.PubKeyFile)
		if sw.TLS {
			args = append(args, "--tls", "--pin", sw.PubKeyFile)
		}
	}
	return args
}
