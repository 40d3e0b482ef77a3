package main

import (
	"context"
	"errors"
	"os"

	"github.com/chatty-dev/chatty/internal/activation"
	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/daemon"
	"github.com/chatty-dev/chatty/internal/exitcode"
	"github.com/urfave/cli/v2"
)

// runDaemon is chattyd without a command: the daemon itself.
func runDaemon(c *cli.Context) error {
	if c.NArg() > 0 {
		return exitcode.Usagef("unexpected argument %q; see chattyd --help", c.Args().First())
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	logger, logFile, err := daemon.NewLogger(cfg.Log, c.App.ErrWriter)
	if err != nil {
		return err
	}
	if logFile != nil {
		defer logFile.Close()
	}
	passed, err := activation.FromSystemd()
	if err != nil {
		logger.WithError(err).Error("Cannot use the descriptors systemd passed")
		return exitcode.ErrReported
	}
	opts := daemon.Options{
		Config:     cfg,
		Reload:     func() (config.Config, error) { return reloadConfig(c) },
		Logger:     logger,
		LogFile:    logFile,
		Notifier:   daemon.SystemdNotifier{NoWatchdog: os.Getenv("CHATTYD_TEST_NO_WATCHDOG") == "1"},
		Activation: passed,
	}
	if exe, err := os.Executable(); err == nil {
		opts.WorkerCommand = func(w config.Worker, sw *daemon.SignedWorker) []string { return DefaultWorkerCommand(exe, w, sw) }
		opts.GuardCommand = guardArgs(exe)
	} else if len(cfg.Pool.Command) == 0 && cfg.Pool.Size > 0 {
		passed.Close()
		logger.WithError(err).Error("Cannot find chattyd's own executable for the built-in worker; set pool.command")
		return exitcode.ErrReported
	}
	d, err := daemon.New(opts)
	if err != nil {
		logger.WithError(err).Error("Cannot start")
		return exitcode.ErrReported
	}
	logger.Info("=== Chatty Server ===")
	if err := d.Run(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
		return exitcode.ErrReported
	}
	return nil
}

// reloadConfig is the SIGHUP path: the file again, with the same flags.
func reloadConfig(c *cli.Context) (config.Config, error) {
	if flagIn(c, "config").String("config") == "" {
		return config.Config{}, errors.New("no --config file to reload; chattyd runs on its built-in configuration")
	}
	return loadConfig(c)
}
