// Package daemon assembles chattyd: the feed, the broadcaster and their
// supervision under one run group, with signals, configuration reload and
// systemd notifications.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chatty-dev/chatty/pkg/broadcast"
	"github.com/chatty-dev/chatty/pkg/config"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/feed"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/logging"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/pool"
	"github.com/chatty-dev/chatty/pkg/signed"
	"github.com/chatty-dev/chatty/pkg/tlsconf"
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
	// ControlListener, if set, is the control socket passed by systemd;
	// otherwise the daemon creates Config.Control.Socket (or the default).
	ControlListener net.Listener
	// WorkerCommand returns the command of the built-in worker for the
	// given worker settings; it is used when pool.command is empty. A
	// non-nil sw asks for a worker of the signed protocol.
	WorkerCommand func(w config.Worker, sw *SignedWorker) []string
	// GuardCommand is the command of the pool's worker guard ("chattyd
	// guard"), which kills what is left of the workers' process groups
	// when chattyd dies; nil runs none (see pool.Options.Guard).
	GuardCommand []string
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
	started time.Time

	cfgMu sync.Mutex // guards cfg
	cfg   config.Config

	id *identity.Identity // nil without identity in the configuration

	bcast     *broadcast.Server
	tls       *broadcast.TLSConfig // nil without a TLS listener
	signed    *broadcast.Server    // nil without a signed listener
	signedTLS *broadcast.TLSConfig // nil without TLS on the signed listener
	keys      *identity.Keyring    // client keys of the signed listener; nil without one
	// startSigned is broadcast.signed as the daemon started: its
	// listener's TLS and authentication change only at restart.
	startSigned config.Signed
	selfCert    *tls.Certificate // the identity's certificate, made when first needed
	source      feed.Source
	pool        *pool.Pool
	control     *control.Server

	feedLines atomic.Uint64 // lines read from the feed
	feedBytes atomic.Uint64 // their bytes, terminators included
	stopping  atomic.Bool   // shutdown has begun

	feedState    stateString
	sigs         chan os.Signal // registered in New, before the port is bound
	stopOnce     sync.Once
	stopRequests chan struct{} // closed to ask Run to stop
}

// New builds the daemon and binds its listener, so that a taken address
// fails here, before anything starts. From New on, the daemon owns the
// stop, reload and log-reopen signals; the caller must call Run.
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
	if cfg.Identity.Enabled() {
		id, err := loadIdentity(cfg.Identity, d.log)
		if err != nil {
			return nil, err
		}
		d.id = id
	}
	// Take over the signals before anyone can learn the port: a stop
	// signal sent right after must stop chattyd cleanly, not kill it.
	d.sigs = make(chan os.Signal, 4)
	signal.Notify(d.sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = broadcast.Listen(cfg.Broadcast.Listen); err != nil {
			signal.Stop(d.sigs)
			return nil, err
		}
	}
	d.bcast = broadcast.New(ln, limitsOf(cfg), opts.Logger.WithField(logging.FieldComponent, "broadcast"))
	if t := cfg.Broadcast.TLS; t.Listen != "" {
		if err := d.listenTLS(t); err != nil {
			signal.Stop(d.sigs)
			ln.Close()
			return nil, err
		}
	}
	var signedLn net.Listener
	if sc := cfg.Broadcast.Signed; sc.Listen != "" {
		var err error
		if signedLn, err = d.listenSigned(sc); err != nil {
			signal.Stop(d.sigs)
			ln.Close()
			return nil, err
		}
	}
	// One numbering for the clients of every listener, so that chattyctl
	// clients never shows an id twice.
	ids := new(broadcast.ClientIDs)
	d.bcast.SetClientIDs(ids)
	if d.signed != nil {
		d.signed.SetClientIDs(ids)
	}
	closeListeners := func() {
		ln.Close()
		if signedLn != nil {
			signedLn.Close()
		}
	}

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

	p, err := pool.New(d.poolOptions(cfg), opts.Logger.WithField(logging.FieldComponent, "pool"))
	if err != nil {
		signal.Stop(d.sigs)
		closeListeners()
		return nil, fmt.Errorf("worker pool: %w", err)
	}
	d.pool = p

	// The control socket last: binding it fails fast when another chattyd
	// answers there.
	ctl, err := control.New(control.Options{
		Path:       cfg.Control.Socket,
		Listener:   opts.ControlListener,
		Group:      cfg.Control.Group,
		MaxWorkers: config.MaxWorkers,
	}, backend{d}, opts.Logger.WithField(logging.FieldComponent, "control"))
	if err != nil {
		signal.Stop(d.sigs)
		closeListeners()
		return nil, err // it names the control socket
	}
	d.control = ctl
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
	log.WithFields(logrus.Fields{"file": path, "fingerprint": id.Fingerprint()}).
		Infof("Identity %s", id.Fingerprint())
	return id, nil
}

// Identity returns the daemon's identity, nil when none is configured.
func (d *Daemon) Identity() *identity.Identity { return d.id }

// ControlSocket returns the control socket's path.
func (d *Daemon) ControlSocket() string { return d.control.Addr() }

// selfSigned returns the certificate derived from the identity, made once
// per run (tls.self_signed).
func (d *Daemon) selfSigned() (*tls.Certificate, error) {
	if d.selfCert != nil {
		return d.selfCert, nil
	}
	if d.id == nil {
		return nil, errors.New("tls.self_signed needs an identity; set identity.key_file or identity.generate: true")
	}
	cert, err := tlsconf.SelfSigned(d.id.Private, time.Now())
	if err != nil {
		return nil, err
	}
	d.selfCert = &cert
	return d.selfCert, nil
}

// tlsFiles returns where a listener's TLS configuration comes from.
func (d *Daemon) tlsFiles(certFile, keyFile, clientCA string, selfSigned bool) (broadcast.TLSFiles, error) {
	f := broadcast.TLSFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: clientCA}
	if selfSigned {
		cert, err := d.selfSigned()
		if err != nil {
			return f, err
		}
		f.Certificate = cert
	}
	return f, nil
}

func (d *Daemon) textTLSFiles(t config.TLS) (broadcast.TLSFiles, error) {
	return d.tlsFiles(t.CertFile, t.KeyFile, t.ClientCAFile, t.SelfSigned)
}

func (d *Daemon) signedTLSFiles(t config.SignedTLS) (broadcast.TLSFiles, error) {
	return d.tlsFiles(t.CertFile, t.KeyFile, t.ClientCAFile, t.SelfSigned)
}

// listenTLS adds the TLS listener, whose clients share the feed.
func (d *Daemon) listenTLS(t config.TLS) error {
	files, err := d.textTLSFiles(t)
	if err != nil {
		return err
	}
	tc, err := broadcast.NewTLSConfig(files)
	if err != nil {
		return err
	}
	tln, err := broadcast.Listen(t.Listen)
	if err != nil {
		return fmt.Errorf("TLS listener: %w", err)
	}
	d.tls = tc
	d.bcast.AddListener(tls.NewListener(tln, tc.ServerConfig()))
	return nil
}

// listenSigned binds the signed listener, whose clients get the feed as
// frames signed with the daemon's identity. It returns the listener, for
// New to close should a later step fail.
func (d *Daemon) listenSigned(sc config.Signed) (net.Listener, error) {
	if d.id == nil {
		return nil, errors.New("broadcast.signed.listen needs an identity; set identity.key_file or identity.generate: true")
	}
	mode, err := signed.ParseMode(sc.Mode)
	if err != nil {
		return nil, fmt.Errorf("broadcast.signed.mode: %w", err)
	}
	feedType, err := message.ParseType(sc.FeedType)
	if err != nil {
		return nil, fmt.Errorf("broadcast.signed.feed_type: %w", err)
	}
	var file *identity.AuthorizedKeys
	if path := d.cfg.Identity.AuthorizedKeys; path != "" {
		if file, err = identity.LoadAuthorizedKeys(path); err != nil {
			return nil, fmt.Errorf("identity.authorized_keys: %w", err)
		}
		d.log.WithField("file", path).Infof("%d client keys authorized", file.Len())
	}
	d.keys = identity.NewKeyring(file)
	d.startSigned = sc
	var tc *broadcast.TLSConfig
	if sc.TLS.Enabled {
		files, err := d.signedTLSFiles(sc.TLS)
		if err != nil {
			return nil, fmt.Errorf("broadcast.signed.tls: %w", err)
		}
		if tc, err = broadcast.NewTLSConfig(files); err != nil {
			return nil, fmt.Errorf("broadcast.signed.tls: %w", err)
		}
	}
	ln, err := broadcast.Listen(sc.Listen)
	if err != nil {
		return nil, fmt.Errorf("signed listener: %w", err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc.ServerConfig())
		d.signedTLS = tc
	}
	so := broadcast.SignedOptions{
		Key:                d.id.Private,
		Mode:               mode,
		CheckpointEvery:    sc.CheckpointEvery,
		CheckpointInterval: sc.CheckpointInterval,
		TimestampWindow:    sc.TimestampWindow,
		FeedType:           feedType,
		Keys:               d.keys,
		Authenticate:       sc.Auth == config.AuthAuthorizedKeys,
		UpstreamRate:       sc.UpstreamRate,
		UpstreamBurst:      sc.UpstreamBurst,
	}
	srv, err := broadcast.NewSigned(ln, limitsOf(d.cfg), so,
		d.opts.Logger.WithField(logging.FieldComponent, "broadcast").WithField(logging.FieldScope, "signed"))
	if err != nil {
		ln.Close()
		return nil, err
	}
	if d.cfg.Pool.Worker.Protocol == "signed" {
		// Workers are given the public key file: it must be the key's.
		pubFile := identity.PublicPath(d.id.Path)
		pub, err := identity.LoadPublicKey(pubFile)
		if err == nil && !pub.Equal(d.id.Public) {
			err = fmt.Errorf("%s is not the public key of %s; move it away and write it again with the key's public half", pubFile, d.id.Path)
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("signed workers (pool.worker.protocol: signed) verify with the public key file: %w", err)
		}
	}
	d.signed = srv
	return ln, nil
}

// publish sends lines to the clients of every listener.
func (d *Daemon) publish(lines [][]byte) uint64 {
	seq := d.bcast.Publish(lines)
	if d.signed != nil {
		d.signed.Publish(lines)
	}
	return seq
}

// publishMessage sends a typed message to the clients of every listener,
// each in its protocol, and returns the text listener's sequence number.
func (d *Daemon) publishMessage(m message.Message) uint64 {
	seq := d.bcast.PublishMessage(m)
	if d.signed != nil {
		d.signed.PublishMessage(m)
	}
	return seq
}

// poolOptions derives the pool's options from a configuration. Workers
// connect to the bound address, on loopback when it is a wildcard.
func (d *Daemon) poolOptions(cfg config.Config) pool.Options {
	// Signed workers need the signed listener, which only a restart adds.
	signedWorkers := cfg.Pool.Worker.Protocol == "signed" && d.signed != nil
	addr := d.bcast.Addr()
	var sw *SignedWorker
	var creds func(int) ([]byte, func(), error)
	if signedWorkers {
		// The listener's TLS and authentication are as the daemon
		// started, whatever the file says now.
		sc := d.startSigned
		addr = d.signed.Addr()
		sw = &SignedWorker{
			PubKeyFile:   identity.PublicPath(d.id.Path),
			TLS:          sc.TLS.Enabled && sc.TLS.SelfSigned,
			Authenticate: sc.Auth == config.AuthAuthorizedKeys,
		}
		if sw.Authenticate {
			creds = d.workerKey
		}
	}
	cmd := cfg.Pool.Command
	if len(cmd) == 0 && d.opts.WorkerCommand != nil {
		cmd = d.opts.WorkerCommand(cfg.Pool.Worker, sw)
	}
	return pool.Options{
		Credentials:    creds,
		Size:           cfg.Pool.Size,
		Command:        cmd,
		Env:            workerEnv(),
		Addr:           dialAddr(addr),
		MinUptime:      cfg.Pool.MinUptime,
		BackoffInitial: cfg.Pool.BackoffInitial,
		BackoffMax:     cfg.Pool.BackoffMax,
		StopTimeout:    cfg.Pool.StopTimeout,
		Guard:          d.opts.GuardCommand,
	}
}

// workerKey issues a key for one start of a pool worker: the worker reads
// it from the pool's credentials pipe, and it is accepted until the
// process is reaped. The daemon's own key never leaves the daemon.
func (d *Daemon) workerKey(int) ([]byte, func(), error) {
	priv, revoke, err := d.keys.Issue()
	if err != nil {
		return nil, nil, err
	}
	pem, err := identity.MarshalPrivatePEM(priv)
	if err != nil {
		revoke()
		return nil, nil, err
	}
	return pem, revoke, nil
}

// dialAddr turns a listener's address into one a local worker can dial.
func dialAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := tcp.IP
	switch {
	case ip == nil || ip.Equal(net.IPv4zero):
		ip = net.IPv4(127, 0, 0, 1)
	case ip.Equal(net.IPv6unspecified):
		ip = net.IPv6loopback
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}

// workerEnv blanks the systemd variables meant for chattyd alone, so that
// a worker never notifies systemd or takes chattyd's sockets.
func workerEnv() []string {
	return []string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="}
}

// Pool returns the worker pool.
func (d *Daemon) Pool() *pool.Pool { return d.pool }

// Scale sets the number of workers and returns the previous number.
func (d *Daemon) Scale(n int) (old int, err error) {
	if n < 0 || n > config.MaxWorkers {
		return 0, fmt.Errorf("scale: want a whole number from 0 to %d, got %d", config.MaxWorkers, n)
	}
	// The pool logs the change.
	return d.pool.Scale(n)
}

func limitsOf(cfg config.Config) broadcast.Limits {
	b := cfg.Broadcast
	return broadcast.Limits{
		MaxClients:         b.MaxClients,
		MaxUnauthenticated: b.Signed.MaxUnauthenticated, // used by the signed listener only
		IdleTimeout:        b.IdleTimeout,
		MaxClientLine:      b.MaxClientLine,
		QueueBytes:         b.QueueBytes,
		QueueLines:         b.QueueLines,
		DrainTimeout:       b.DrainTimeout,
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
	if addrs := d.bcast.Addrs(); len(addrs) > 1 {
		d.log.Infof("The TLS listener is on %s", addrs[1])
	}
	if d.signed != nil {
		d.log.Infof("The signed listener is on %s", d.signed.Addr())
	}

	defer signal.Stop(d.sigs)
	stopSignal := make(chan os.Signal, 1)
	sigDone := make(chan struct{})
	sigEnded := make(chan struct{})
	go func() {
		defer close(sigEnded)
		d.handleSignals(stopSignal, sigDone)
	}()
	defer func() { close(sigDone); <-sigEnded }()

	var g group
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
	g.add("broadcast", func() error { return d.bcast.Run(bcastCtx) })
	if d.signed != nil {
		g.add("broadcast-signed", func() error { return d.signed.Run(bcastCtx) })
	}
	g.add("systemd", func() error { return d.runNotifier(auxCtx) })
	g.add("pool", func() error { return d.pool.Run(poolCtx) })
	g.add("control", func() error {
		if err := d.control.Run(ctlCtx); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	})
	if n := d.pool.Size(); n > 0 {
		d.log.Infof("Chatting with sometimes faulty child processes (%d processes)", n)
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
			d.log.WithError(err).WithField("member", m.name).Error("Stopping: a part of the daemon failed")
		} else {
			d.log.WithField("member", m.name).Info("Stopping")
		}
	case sig := <-stopSignal:
		d.log.WithField("signal", sig.String()).Info("Stopping: signal received; a second signal stops at once")
	}
	d.stopping.Store(true)
	d.notify.Notify("STOPPING=1")

	// Workers first, so that none is respawned while the rest stops.
	stopPool()
	g.wait("pool")
	stopFeed()
	g.wait("feed")
	stopBcast()
	g.wait("broadcast")
	if d.signed != nil {
		g.wait("broadcast-signed")
	}
	// The control socket goes last, so that status answers while stopping.
	stopCtl()
	stopAux()
	g.waitAll()
	if err == nil {
		d.log.Info("Stopped")
	}
	return err
}

// handleSignals owns the signal channel for the whole of Run: reload and
// log-reopen signals are handled in place (reload not once stopping); the
// first stop signal goes to stop, and a stop signal while stopping, by
// whatever cause, abandons the graceful path at once.
func (d *Daemon) handleSignals(stop chan<- os.Signal, done <-chan struct{}) {
	requested := false
	for {
		select {
		case <-done:
			return
		case sig := <-d.sigs:
			switch sig {
			case syscall.SIGHUP:
				if d.stopping.Load() {
					d.log.Warn("SIGHUP ignored: chattyd is stopping")
					continue
				}
				d.reload()
			case syscall.SIGUSR1:
				d.reopenLog()
			default:
				if requested || d.stopping.Load() {
					d.log.WithField("signal", sig.String()).Warn("Second signal: stopping at once")
					os.Exit(1)
				}
				requested = true
				stop <- sig // buffered: taken by Run's select
			}
		}
	}
}

// runFeed reads the feed into the broadcaster. At end of feed it either
// keeps running (on_eof: keep, as the original did) or returns to stop the
// daemon (on_eof: stop).
func (d *Daemon) runFeed(ctx context.Context) error {
	log := d.opts.Logger.WithField(logging.FieldComponent, "feed").WithField(logging.FieldScope, d.source.Name())
	debug := func() bool { return d.opts.Logger.IsLevelEnabled(logrus.DebugLevel) }
	d.feedState.set("reading")
	err := d.source.Run(ctx, feed.HandlerFunc(func(lines [][]byte) {
		n := 0
		for _, l := range lines {
			n += len(l) + 1
		}
		d.feedLines.Add(uint64(len(lines)))
		d.feedBytes.Add(uint64(n))
		if debug() {
			for _, l := range lines {
				log.Debugf("Received: %s", l)
			}
		}
		d.publish(lines)
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
	if d.signed != nil {
		d.signed.SetLimits(limitsOf(next))
	}
	if d.tls != nil && next.Broadcast.TLS.Listen != "" {
		files, err := d.textTLSFiles(next.Broadcast.TLS)
		if err == nil {
			err = d.tls.Reload(files)
		}
		if err != nil {
			d.log.WithError(err).Error("Reload: TLS files not applied; the previous ones stay")
		}
	}
	if d.signedTLS != nil && next.Broadcast.Signed.TLS.Enabled {
		// Where the certificate comes from (files or the identity) is
		// set at start, as built-in workers pin what the daemon started
		// with; a reload reads the files again.
		st := next.Broadcast.Signed.TLS
		if st.SelfSigned = d.startSigned.TLS.SelfSigned; st.SelfSigned {
			st = d.startSigned.TLS
		}
		files, err := d.signedTLSFiles(st)
		if err == nil {
			err = d.signedTLS.Reload(files)
		}
		if err != nil {
			d.log.WithError(err).Error("Reload: the signed listener's TLS files not applied; the previous ones stay")
		}
	}
	d.reloadAuthorizedKeys(next.Identity.AuthorizedKeys)
	// A reload changes the pool's size only when pool.size itself changed,
	// so that one meant for, say, the log level keeps a chattyctl scale.
	po := d.poolOptions(next)
	if next.Pool.Size == prev.Pool.Size {
		po.Size = d.pool.Size()
	}
	if err := d.pool.SetOptions(po); err != nil {
		d.log.WithError(err).Error("Reload: pool settings not applied")
	}
	for _, field := range restartOnly(prev, next) {
		d.log.WithField("field", field).Warn("Reload: this setting changes only at restart")
	}
	d.log.Info("Configuration reloaded")
	d.sendStatus()
}

// reloadAuthorizedKeys reads the authorized-keys file again: new
// connections and client messages are checked against the new keys. A
// file that does not parse changes nothing.
func (d *Daemon) reloadAuthorizedKeys(path string) {
	if d.keys == nil {
		return
	}
	if path == "" {
		if d.keys.File() != nil {
			d.log.Info("Reload: no authorized-keys file any more; only pool workers' keys are accepted")
		}
		d.keys.SetFile(nil)
		d.signed.DropRevoked()
		return
	}
	file, err := identity.LoadAuthorizedKeys(path)
	if err != nil {
		d.log.WithError(err).Error("Reload: authorized keys not applied; the previous ones stay")
		return
	}
	d.keys.SetFile(file)
	d.log.WithField("file", path).Infof("Reload: %d client keys authorized", file.Len())
	if n := d.signed.DropRevoked(); n > 0 {
		d.log.Warnf("Reload: %d clients whose key is no longer authorized were disconnected", n)
	}
}

// restartOnly lists the settings that changed but cannot apply live.
func restartOnly(prev, next config.Config) []string {
	var out []string
	if prev.Broadcast.Listen != next.Broadcast.Listen {
		out = append(out, "broadcast.listen")
	}
	if prev.Broadcast.TLS.Listen != next.Broadcast.TLS.Listen {
		out = append(out, "broadcast.tls.listen")
	}
	// The signed listener's certificate files are read again on reload
	// and its max_unauthenticated is one of the limits (limitsOf); the
	// rest of it is set at start.
	ps, ns := prev.Broadcast.Signed, next.Broadcast.Signed
	ps.TLS.CertFile, ps.TLS.KeyFile, ps.TLS.ClientCAFile = ns.TLS.CertFile, ns.TLS.KeyFile, ns.TLS.ClientCAFile
	ps.MaxUnauthenticated = ns.MaxUnauthenticated
	if ps != ns {
		out = append(out, "broadcast.signed")
	}
	if prev.Feed.Source != next.Feed.Source || prev.Feed.Path != next.Feed.Path {
		out = append(out, "feed.source")
	}
	if prev.Feed.MaxLineBytes != next.Feed.MaxLineBytes {
		out = append(out, "feed.max_line_bytes")
	}
	// identity.authorized_keys is read again on reload.
	if prev.Identity.KeyFile != next.Identity.KeyFile || prev.Identity.Generate != next.Identity.Generate {
		out = append(out, "identity")
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
