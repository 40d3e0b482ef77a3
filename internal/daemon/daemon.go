// Package daemon assembles chattyd: the feed, the broadcast listeners, the
// worker pool and the control socket under one run group, with signals,
// configuration reload and systemd notifications.
//
// The daemon can run in-process (tests do): with Options.NoSignals it
// takes none of the process's signals, and it never exits the process.
// chattyd is Linux-only.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/activation"
	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/feed"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/pool"
	"github.com/chatty-dev/chatty/internal/pool/poolsize"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/sirupsen/logrus"
)

// ErrStoppedAtOnce is Run's error when a second stop signal abandoned the
// graceful stop: parts of the daemon may still be running, and the caller
// should end the process.
var ErrStoppedAtOnce = errors.New("stopped at once by a second signal; the graceful stop was abandoned")

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
	// Activation holds what systemd passed (socket activation): the
	// broadcast listener, the control socket and the feed FIFO, each used
	// instead of what the configuration names. New takes them over, and
	// closes them when it fails.
	Activation activation.Passed
	// Feed, if set, replaces the feed source (the configuration's and a
	// passed FIFO alike), for tests.
	Feed feed.Source
	// WorkerCommand returns the command of the built-in worker for the
	// given worker settings; it is used when pool.command is empty. A
	// non-nil sw asks for a worker of the signed protocol.
	WorkerCommand func(w config.Worker, sw *SignedWorker) []string
	// GuardCommand is the command of the pool's worker guard ("chattyd
	// guard"), which kills what is left of the workers' process groups
	// when chattyd dies; nil runs none (see pool.Options.Guard).
	GuardCommand []string
	// NoSignals leaves the process's signals alone (nats-server's
	// NoSigs): stop the daemon with Stop or Run's context.
	NoSignals bool
}

// SignedWorker is what a built-in worker of the signed protocol needs.
type SignedWorker struct {
	// PubKeyFile is the daemon's public key file, to verify the stream
	// with (never the private key).
	PubKeyFile string
	// TLS asks the worker to connect with TLS and pin the public key of
	// PubKeyFile: the listener serves the identity's certificate.
	TLS bool
	// Authenticate tells the worker that the listener requires it; the
	// worker's key comes through the pool's credentials pipe.
	Authenticate bool
}

// Daemon is a running chattyd. Build it with New, then call Run.
type Daemon struct {
	opts    Options
	log     *logrus.Entry
	notify  Notifier
	started time.Time // set by New, before anything reads it

	cfgMu sync.Mutex // guards cfg
	cfg   config.Config

	id        *identity.Identity // nil without identity in the configuration
	listeners *listeners
	source    feed.Source
	pool      *pool.Pool
	control   *controlserver.Server
	metrics   *metricsServer // nil without metrics.listen
	shared    *sharedFeed    // nil without nats: the feed goes to the listeners directly

	feedLines atomic.Uint64 // lines read from the feed
	feedBytes atomic.Uint64 // their bytes, terminators included
	feedState stateString

	// stopBegan is when shutdown began (Unix nanoseconds), 0 before.
	stopBegan    atomic.Int64
	forceAfter   time.Duration  // forceAfter, but in tests
	sigs         chan os.Signal // registered in New, before the port is bound
	stopOnce     sync.Once
	stopRequests chan struct{} // closed to ask Run to stop
	forceOnce    sync.Once
	forced       chan struct{} // closed when a second signal abandons the graceful stop
}

// New builds the daemon and binds its listeners and control socket, so
// that a taken address fails here, before anything starts. Unless
// Options.NoSignals, from New on the daemon owns the stop, reload and
// log-reopen signals; the caller must call Run.
func New(opts Options) (_ *Daemon, err error) {
	if opts.Logger == nil {
		opts.Activation.Close()
		return nil, errors.New("daemon: Options.Logger is required")
	}
	cfg := opts.Config
	d := &Daemon{
		opts:         opts,
		cfg:          cfg,
		log:          opts.Logger.WithField(logging.FieldComponent, "daemon"),
		notify:       opts.Notifier,
		started:      time.Now(),
		sigs:         make(chan os.Signal, 4),
		stopRequests: make(chan struct{}),
		forced:       make(chan struct{}),
		forceAfter:   forceAfter,
	}
	if d.notify == nil {
		d.notify = nopNotifier{}
	}
	defer func() {
		if err != nil {
			signal.Stop(d.sigs)
			if d.listeners != nil {
				d.listeners.closeAll()
			}
			if d.shared != nil {
				d.shared.close()
			}
			if d.metrics != nil {
				d.metrics.close()
			}
			opts.Activation.Close()
		}
	}()
	if cfg.Identity.Enabled() {
		if d.id, err = loadIdentity(cfg.Identity, d.log); err != nil {
			return nil, err
		}
	}
	// Take over the signals before anyone can learn the port: a stop
	// signal sent right after must stop chattyd cleanly, not kill it.
	if !opts.NoSignals {
		signal.Notify(d.sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	}
	if d.listeners, err = bindListeners(cfg, opts.Activation.Broadcast, d.id, opts.Logger); err != nil {
		return nil, err
	}
	if cfg.NATS.Enabled() {
		if d.shared, err = startSharedFeed(cfg, d.listeners, opts.Logger); err != nil {
			return nil, err
		}
	}
	d.listeners.setStatus(backend{d}.Status)
	d.source = newSource(opts, cfg)
	d.feedState.set(control.FeedStarting)

	if d.pool, err = pool.New(d.poolOptions(cfg), opts.Logger.WithField(logging.FieldComponent, "pool")); err != nil {
		return nil, fmt.Errorf("worker pool: %w", err)
	}
	// Slots whose workers carry on (pool.replay: unacked) are found by
	// the text listener as it accepts; with delivery one the work queue
	// serves that address instead.
	if d.listeners.text != nil {
		d.listeners.text.SetPlacer(d.placeWorker)
	}
	if addr := cfg.Metrics.Listen; addr != "" {
		if d.metrics, err = bindMetrics(addr, opts.Logger.WithField(logging.FieldComponent, "metrics")); err != nil {
			return nil, err // it names metrics.listen
		}
	}
	// The control socket last: binding it fails fast when another chattyd
	// answers there.
	d.control, err = controlserver.New(controlserver.Options{
		Path:       cfg.Control.Socket,
		Listener:   opts.Activation.Control,
		Group:      cfg.Control.Group,
		MaxWorkers: poolsize.Max,
	}, backend{d}, opts.Logger.WithField(logging.FieldComponent, "control"))
	if err != nil {
		return nil, err // it names the control socket
	}
	if d.metrics != nil {
		d.metrics.serve(d.control.MetricsHandler())
	}
	return d, nil
}

// loadIdentity loads the configured key, or generates it when allowed and
// missing. A key others may read is refused, naming the file and the fix.
func loadIdentity(c config.Identity, log *logrus.Entry) (*identity.Identity, error) {
	path := c.Path()
	var id *identity.Identity
	var err error
	if c.Generate {
		var generated bool
		id, generated, err = identity.LoadOrGenerate(path)
		if err == nil && generated {
			log.WithField("file", path).Info("Generated a new identity key")
		}
	} else {
		id, err = identity.Load(path)
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("identity key %s does not exist; make one with: chattyd keygen --out %s (or set identity.generate: true)", path, path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	log.WithFields(logrus.Fields{"file": path, "fingerprint": id.Fingerprint()}).Info("Identity loaded")
	return id, nil
}

// Stop asks Run to shut down gracefully. It is safe to call many times.
func (d *Daemon) Stop() {
	d.stopOnce.Do(func() { close(d.stopRequests) })
}

// config returns the configuration in force.
func (d *Daemon) config() config.Config {
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	return d.cfg
}

// stopping reports whether shutdown has begun.
func (d *Daemon) stopping() bool { return d.stopBegan.Load() != 0 }

// Run runs the daemon until ctx is done, Stop is called, a stop signal
// arrives, or a member fails. Shutdown is ordered: workers first, so that
// none is respawned, then the feed (stop producing), then the listeners
// (drain and close clients), and the control socket and the metrics
// listener last, so that status answers while stopping. It returns nil on a clean stop, and
// ErrStoppedAtOnce when a second signal cut the stop short.
func (d *Daemon) Run(ctx context.Context) error {
	d.listeners.logBound()

	defer signal.Stop(d.sigs)
	stopSignal := make(chan os.Signal, 1)
	sigDone := make(chan struct{})
	sigEnded := make(chan struct{})
	go func() {
		defer close(sigEnded)
		d.handleSignals(stopSignal, sigDone)
	}()
	defer func() { close(sigDone); <-sigEnded }()

	g := group{abort: d.forced, log: d.log}
	poolCtx, stopPool := context.WithCancel(context.Background())
	feedCtx, stopFeed := context.WithCancel(context.Background())
	bcastCtx, stopBcast := context.WithCancel(context.Background())
	auxCtx, stopAux := context.WithCancel(context.Background())
	ctlCtx, stopCtl := context.WithCancel(context.Background())
	defer stopCtl()
	defer stopPool()
	defer stopFeed()
	defer stopBcast()
	defer stopAux()

	g.add("feed", func() error { return d.runFeed(feedCtx) })
	pubCtx, stopPub := context.WithCancel(context.Background())
	consCtx, stopCons := context.WithCancel(context.Background())
	natsCtx, stopNATS := context.WithCancel(context.Background())
	defer stopPub()
	defer stopCons()
	defer stopNATS()
	if f := d.shared; f != nil {
		f.run(&g, pubCtx, consCtx)
		if f.embedded != nil {
			g.add("nats-server", func() error { return f.embedded.Run(natsCtx) })
		}
	}
	d.listeners.run(bcastCtx, &g)
	g.add("systemd", func() error { return d.runNotifier(auxCtx) })
	g.add("pool", func() error { return d.pool.Run(poolCtx) })
	g.add("control", func() error {
		if err := d.control.Run(ctlCtx); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	})
	if every := d.config().Log.SummaryInterval; every > 0 {
		g.add("summary", func() error { return d.runSummary(auxCtx, every) })
	}
	if d.metrics != nil {
		d.log.Infof("Metrics are served on http://%s/metrics", d.metrics.addr())
		g.add("metrics", func() error { return d.metrics.run(ctlCtx) })
	}
	if n := d.pool.Size(); n > 0 {
		d.log.Infof("Chatting with sometimes faulty child processes (%s)", plural(n, "process", "processes"))
	}

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
			d.log.WithError(err).Errorf("Stopping: the %s failed", partName(m.name))
		} else {
			why := ""
			if m.name == "feed" {
				why = " (feed.on_eof: stop)"
			}
			d.log.Infof("Stopping: the %s ended%s", partName(m.name), why)
		}
	case sig := <-stopSignal:
		d.log.WithField("signal", sig.String()).Info("Stopping: signal received; a second signal stops at once if it comes a second or more later")
	}
	d.stopBegan.CompareAndSwap(0, time.Now().UnixNano())
	d.notify.Notify("STOPPING=1")

	if d.listeners.queue != nil {
		// A work queue drains while the workers still run: the feed
		// stops first, then they have drain_timeout to acknowledge
		// what they hold. A feed held back by a full queue is let go.
		d.listeners.queue.Release()
		stopFeed()
		g.wait("feed")
		if f := d.shared; f != nil && f.work != nil {
			// Across machines: the feed's last lines go into the
			// stream, and this daemon takes no more from it while its
			// workers finish what they hold; the consumer
			// acknowledges those, then gives back the rest.
			stopPub()
			g.wait("nats-publisher")
			f.work.StopPulling()
		}
		d.drainQueue()
	}
	stopPool()
	g.wait("pool")
	stopFeed()
	g.wait("feed")
	if f := d.shared; f != nil {
		// What the feed gave the publisher goes into the stream (for up
		// to broadcast.drain_timeout) and back to this daemon's clients.
		stopPub()
		g.wait("nats-publisher")
		f.waitConsumed(d.config().Broadcast.DrainTimeout)
		stopCons()
		g.wait("nats-consumer")
	}
	stopBcast()
	d.listeners.wait(&g)
	stopCtl()
	stopAux()
	stopNATS()
	g.waitAll()
	if d.shared != nil {
		d.shared.close()
	}
	if g.aborted() {
		d.log.Warn("Stopped at once: the graceful stop was abandoned")
		return ErrStoppedAtOnce
	}
	if err == nil {
		d.log.Info("Stopped")
	}
	return err
}

// drainQueue lets the work queue's workers acknowledge what they hold,
// for up to broadcast.drain_timeout, and logs what was left.
func (d *Daemon) drainQueue() {
	ctx, cancel := context.WithTimeout(context.Background(), d.config().Broadcast.DrainTimeout)
	defer cancel()
	// A second signal cuts the wait short.
	watched := make(chan struct{})
	defer func() { cancel(); <-watched }()
	go func() {
		defer close(watched)
		select {
		case <-d.forced:
			cancel()
		case <-ctx.Done():
		}
	}()
	waiting, inFlight := d.listeners.queue.Drain(ctx)
	if waiting+inFlight == 0 {
		d.log.Info("Work queue drained: every line acknowledged")
		return
	}
	d.log.WithFields(logrus.Fields{"waiting": waiting, "in_flight": inFlight}).
		Warnf("Work queue not drained within broadcast.drain_timeout: %d lines still queued and %d in flight, unacknowledged", waiting, inFlight)
}

// partName says what a member of the run group is, for an operator.
func partName(member string) string {
	switch member {
	case "feed":
		return "feed"
	case "pool":
		return "worker pool"
	case "control":
		return "control socket"
	case "systemd":
		return "systemd notifier"
	case "summary":
		return "summary logger"
	case "nats-publisher":
		return "NATS publisher"
	case "nats-consumer":
		return "NATS consumer"
	case "nats-server":
		return "embedded NATS server"
	}
	return member + " listener"
}

// plural says n with the singular or plural noun.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
