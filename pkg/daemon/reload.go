package daemon

import (
	"io"

	"github.com/chatty-dev/chatty/pkg/config"
	"github.com/chatty-dev/chatty/pkg/logging"
	"github.com/sirupsen/logrus"
)

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

	configureLogger(d.opts.Logger, next.Log, d.opts.LogFile != nil)
	d.listeners.reload(next)
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

// NewLogger builds chattyd's root logger from the log settings: to
// stderr, or to log.file (returned, for SIGUSR1's reopen, and to close).
func NewLogger(c config.Log, stderr io.Writer) (*logrus.Logger, *logging.File, error) {
	logger := logrus.New()
	logger.SetOutput(stderr)
	var lf *logging.File
	if c.File != "" {
		var err error
		if lf, err = logging.OpenFile(c.File); err != nil {
			return nil, nil, err
		}
		logger.SetOutput(lf)
	}
	configureLogger(logger, c, lf != nil)
	return logger, lf, nil
}

// configureLogger sets the logger's level and format, at start and on
// reload. The journal's format applies only when logging to stderr.
func configureLogger(l *logrus.Logger, c config.Log, toFile bool) {
	l.SetLevel(logrusLevel(c.Level))
	l.SetFormatter(logging.NewFormatter(c.Format == config.FormatJSON, !toFile && logging.UnderJournal()))
}

// logrusLevel is the logger's level for log.level.
func logrusLevel(l config.LogLevel) logrus.Level {
	switch l {
	case config.LevelDebug:
		return logrus.DebugLevel
	case config.LevelWarning:
		return logrus.WarnLevel
	case config.LevelError:
		return logrus.ErrorLevel
	}
	return logrus.InfoLevel
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
