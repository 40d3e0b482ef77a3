package daemon

import (
	"io"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/logging"
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
	for _, field := range config.RestartOnlyChanges(prev, next) {
		d.log.WithField("field", field).Warn("Reload: this setting changes only at restart")
	}
	d.log.Info("Configuration reloaded")
	d.sendStatus()
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
