// Package daemon assembles chattyd: the feed, the broadcaster and their
// supervision under one run group, with signals, configuration reload and
// systemd notifications.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/pkg/broadcast"
	"github.com/chatty-dev/chatty/pkg/config"
	"github.com/chatty-dev/chatty/pkg/feed"
	"github.com/chatty-dev/chatty/pkg/logging"
	"github.com/sirupsen/logrus"
)

// Version is chattyd's version, set at build time.
var Version = "dev"

// Options are what the daemon is built from.
type Options struct {
	// Config is the effective configuration (file plus flags).
	Config config.Config
	// Reload loads the configuration again, for SIGHUP: the file with the
	// command-line overrides applied. Nil disables reloading.
	Reload func() (config.Config, error)
	// Logger is the root logger; reload changes its level and format.
	Logger *logrus.Logger
	// LogFile, if set, is reopened on SIGUSR1.
	LogFile *logging.File
	// Notifier receives systemd notifications; nil sends none.
	Notifier Notifier
	// Listener, if set, is used instead of binding Config.Broadcast.Listen
	// (a socket passed by systemd).
	Listener net.Listener
	// Feed, if set, replaces the source named by the configuration.
	Feed feed.Source
}

// Daemon is a running chattyd. Build it with New, then call Run.
type Daemon struct {
	opts    Options
	log     *logrus.Entry
	notify  Notifier
	started time.Time

	cfgMu sync.Mutex // guards cfg
	cfg   config.Config

	bcast  *broadcast.Server
	source feed.Source

	feedState    stateString
	stopOnce     sync.Once
	stopRequests chan struct{} // closed to ask Run to stop
}

// New builds the daemon and binds its listener, so that a taken address
// fails here, before anything starts.
func New(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		return nil, errors.New("daemon: Options.Logger is required")
	}
	cfg := opts.Config
	d := &Daemon{
		opts:         opts,
		cfg:          cfg,
		log:          opts.Logger.WithField(logging.FieldComponent, "daemon"),
		notify:       opts.Notifier,
		stopRequests: make(chan struct{}),
	}
	if d.notify == nil {
		d.notify = nopNotifier{}
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = broadcast.Listen(cfg.Broadcast.Listen); err != nil {
			return nil, err
		}
	}
	d.bcast = broadcast.New(ln, limitsOf(cfg), opts.Logger.WithField(logging.FieldComponent, "broadcast"))

	d.source = opts.Feed
	if d.source == nil {
		feedLog := opts.Logger.WithField(logging.FieldComponent, "feed")
		switch cfg.Feed.Source {
		case "fifo":
			d.source = feed.NewFIFO(cfg.Feed.Path, cfg.Feed.MaxLineBytes, feedLog.WithField(logging.FieldScope, "fifo"))
		default:
			d.source = feed.NewStdin(cfg.Feed.MaxLineBytes, feedLog.WithField(logging.FieldScope, "stdin"))
		}
	}
	d.feedState.set("starting")
	return d, nil
}

func limitsOf(cfg config.Config) broadcast.Limits {
	b := cfg.Broadcast
	return broadcast.Limits{
		MaxClients:    b.MaxClients,
		IdleTimeout:   b.IdleTimeout,
		MaxClientLine: b.MaxClientLine,
		QueueBytes:    b.QueueBytes,
		QueueLines:    b.QueueLines,
		DrainTimeout:  b.DrainTimeout,
	}
}

// Addr returns the broadcaster's bound address.
func (d *Daemon) Addr() net.Addr { return d.bcast.Addr() }

// Broadcaster returns the broadcaster, for status.
func (d *Daemon) Broadcaster() *broadcast.Server { return d.bcast }

// Stop asks Run to shut down gracefully. It is safe to call many times.
func (d *Daemon) Stop() {
	d.stopOnce.Do(func() { close(d.stopRequests) })
}

// Config returns the configuration in force.
func (d *Daemon) Config() config.Config {
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	return d.cfg
}

// Run runs the daemon until ctx is done, Stop is called, a stop signal
// arrives, or a member fails. Shutdown is ordered: stop producing (feed),
// then drain and close clients. It returns nil on a clean stop.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()
	d.log.Infof("The TCP server is listening on %s", d.bcast.Addr())

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	var g group
	feedCtx, stopFeed := context.WithCancel(context.Background())
	bcastCtx, stopBcast := context.WithCancel(context.Background())
	auxCtx, stopAux := context.WithCancel(context.Background())
	defer stopFeed()
	defer stopBcast()
	defer stopAux()

	g.add("feed", func() error { return d.runFeed(feedCtx) })
	g.add("broadcast", func() error { return d.bcast.Run(bcastCtx) })
	g.add("systemd", func() error { return d.runNotifier(auxCtx) })

	if err := d.notify.Notify("READY=1"); err != nil {
		d.log.WithError(err).Warn("systemd notification failed")
	}
	d.sendStatus()

	var err error
	select {
	case <-ctx.Done():
		d.log.Info("Stopping: context cancelled")
	case <-d.stopRequests:
		d.log.Info("Stopping: requested")
	case m := <-g.done:
		g.record(m)
		err = m.err
		if err != nil {
			d.log.WithError(err).WithField("member", m.name).Error("Stopping: a part of the daemon failed")
		} else {
			d.log.WithField("member", m.name).Info("Stopping")
		}
	case sig := <-d.waitSignal(sigs):
		d.log.WithField("signal", sig.String()).Info("Stopping: signal received; a second signal stops at once")
	}
	d.notify.Notify("STOPPING=1")

	// A second stop signal abandons the graceful path.
	forced := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGTERM || sig == syscall.SIGINT {
					d.log.WithField("signal", sig.String()).Warn("Second signal: stopping at once")
					os.Exit(1)
				}
			case <-forced:
				return
			}
		}
	}()
	defer close(forced)

	stopFeed()
	g.wait("feed")
	stopBcast()
	g.wait("broadcast")
	stopAux()
	g.waitAll()
	if err == nil {
		d.log.Info("Stopped")
	}
	return err
}

// waitSignal handles reload and log-reopen signals in place and returns a
// channel that yields the first stop signal.
func (d *Daemon) waitSignal(sigs <-chan os.Signal) <-chan os.Signal {
	out := make(chan os.Signal, 1)
	go func() {
		for sig := range sigs {
			switch sig {
			case syscall.SIGHUP:
				d.reload()
			case syscall.SIGUSR1:
				d.reopenLog()
			default:
				out <- sig
				return
			}
		}
	}()
	return out
}

// runFeed reads the feed into the broadcaster. At end of feed it either
// keeps running (on_eof: keep, as the original did) or returns to stop the
// daemon (on_eof: stop).
func (d *Daemon) runFeed(ctx context.Context) error {
	log := d.opts.Logger.WithField(logging.FieldComponent, "feed").WithField(logging.FieldScope, d.source.Name())
	debug := func() bool { return d.opts.Logger.IsLevelEnabled(logrus.DebugLevel) }
	d.feedState.set("reading")
	err := d.source.Run(ctx, feed.HandlerFunc(func(lines [][]byte) {
		if debug() {
			for _, l := range lines {
				log.Debugf("Received: %s", l)
			}
		}
		d.bcast.Publish(lines)
	}))
	if ctx.Err() != nil {
		d.feedState.set("stopped")
		return nil
	}
	if err != nil {
		d.feedState.set("failed")
		return fmt.Errorf("feed %s: %w", d.source.Name(), err)
	}
	d.feedState.set("eof")
	if d.Config().Feed.OnEOF == "stop" {
		log.Info("End of feed; stopping (feed.on_eof: stop)")
		return nil
	}
	log.Info("End of feed; still serving clients (feed.on_eof: keep)")
	<-ctx.Done()
	return nil
}

// reload applies a new configuration on SIGHUP. An invalid file is
// rejected and the configuration in force is kept.
func (d *Daemon) reload() {
	if d.opts.Reload == nil {
		d.log.Warn("SIGHUP ignored: no configuration file to reload")
		return
	}
	d.notify.Notify(reloadingState())
	defer d.notify.Notify("READY=1")
	next, err := d.opts.Reload()
	if err != nil {
		d.log.WithError(err).Error("Reload rejected; keeping the configuration in force")
		return
	}
	d.cfgMu.Lock()
	prev := d.cfg
	d.cfg = next
	d.cfgMu.Unlock()

	if err := applyLogConfig(d.opts.Logger, next.Log); err != nil {
		d.log.WithError(err).Error("Reload: log settings not applied")
	}
	d.bcast.SetLimits(limitsOf(next))
	for _, field := range restartOnly(prev, next) {
		d.log.WithField("field", field).Warn("Reload: this setting changes only at restart")
	}
	d.log.Info("Configuration reloaded")
	d.sendStatus()
}

// restartOnly lists the settings that changed but cannot apply live.
func restartOnly(prev, next config.Config) []string {
	var out []string
	if prev.Broadcast.Listen != next.Broadcast.Listen {
		out = append(out, "broadcast.listen")
	}
	if prev.Feed.Source != next.Feed.Source || prev.Feed.Path != next.Feed.Path {
		out = append(out, "feed.source")
	}
	if prev.Feed.MaxLineBytes != next.Feed.MaxLineBytes {
		out = append(out, "feed.max_line_bytes")
	}
	if prev.Control != next.Control {
		out = append(out, "control")
	}
	if prev.Log.File != next.Log.File {
		out = append(out, "log.file")
	}
	return out
}

// applyLogConfig sets the logger's level and format.
func applyLogConfig(l *logrus.Logger, c config.Log) error {
	level, err := logging.ParseLevel(c.Level)
	if err != nil {
		return err
	}
	l.SetLevel(level)
	return logging.SetFormat(l, c.Format, logging.UnderJournal())
}

func (d *Daemon) reopenLog() {
	if d.opts.LogFile == nil {
		return
	}
	if err := d.opts.LogFile.Reopen(); err != nil {
		d.log.WithError(err).Error("Reopening the log file failed")
		return
	}
	d.log.Info("Log file reopened")
}

// stateString is a string read and written from several goroutines.
type stateString struct {
	mu sync.Mutex // guards s
	s  string
}

func (s *stateString) set(v string) { s.mu.Lock(); s.s = v; s.mu.Unlock() }
func (s *stateString) get() string  { s.mu.Lock(); defer s.mu.Unlock(); return s.s }

// FeedState reports the feed's state: starting, reading, eof, stopped or failed.
func (d *Daemon) FeedState() string { return d.feedState.get() }

// FeedName names the feed source.
func (d *Daemon) FeedName() string { return d.source.Name() }

// FeedDropped reports how many over-long feed lines were dropped.
func (d *Daemon) FeedDropped() uint64 { return d.source.Dropped() }

// Started reports when Run began.
func (d *Daemon) Started() time.Time { return d.started }
