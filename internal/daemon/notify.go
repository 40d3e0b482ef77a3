package daemon

import (
	"context"
	"fmt"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notifier sends systemd service notifications ("READY=1", ...).
type Notifier interface {
	Notify(state string) error
	// WatchdogInterval returns the watchdog interval, 0 when disabled.
	WatchdogInterval() time.Duration
}

// SystemdNotifier notifies through $NOTIFY_SOCKET; without it, it does
// nothing.
type SystemdNotifier struct {
	// NoWatchdog suppresses watchdog pings (a test switch: systemd must
	// then restart the service).
	NoWatchdog bool
}

// Notify implements Notifier.
func (n SystemdNotifier) Notify(state string) error {
	_, err := sddaemon.SdNotify(false, state)
	return err
}

// WatchdogInterval implements Notifier.
func (n SystemdNotifier) WatchdogInterval() time.Duration {
	if n.NoWatchdog {
		return 0
	}
	d, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

type nopNotifier struct{}

func (nopNotifier) Notify(string) error             { return nil }
func (nopNotifier) WatchdogInterval() time.Duration { return 0 }

// reloadingState is RELOADING=1 with the monotonic timestamp that newer
// systemd versions expect alongside it.
func reloadingState() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "RELOADING=1"
	}
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}

// statusEvery is how often STATUS= is refreshed.
const statusEvery = 5 * time.Second

// runNotifier pings the watchdog at half its interval and refreshes the
// STATUS= line until ctx is done.
func (d *Daemon) runNotifier(ctx context.Context) error {
	status := time.NewTicker(statusEvery)
	defer status.Stop()
	var watchdog <-chan time.Time
	if iv := d.notify.WatchdogInterval(); iv > 0 {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		watchdog = t.C
		d.notify.Notify("WATCHDOG=1")
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-watchdog:
			d.notify.Notify("WATCHDOG=1")
		case <-status.C:
			d.sendStatus()
		}
	}
}

func (d *Daemon) sendStatus() {
	st := d.listeners.stats()
	feedState, _ := d.feedStatus()
	d.notify.Notify(fmt.Sprintf("STATUS=%d clients, %d lines, feed %s", st.Connected, st.Lines, feedState))
}
