package daemon

import (
	"os"
	"syscall"
	"time"
)

// forceAfter is how long after the stop began a further stop signal means
// "stop at once". Closer signals are one stop sent twice: GNU timeout, for
// one, signals both the child and its process group.
const forceAfter = time.Second

// handleSignals owns the signal channel for the whole of Run: reload and
// log-reopen signals are handled in place (reload not once stopping); the
// first stop signal goes to stop, and a stop signal at least d.forceAfter
// (forceAfter) after the stop began, by whatever cause, abandons the graceful path.
func (d *Daemon) handleSignals(stop chan<- os.Signal, done <-chan struct{}) {
	requested := false
	for {
		select {
		case <-done:
			return
		case sig := <-d.sigs:
			switch sig {
			case syscall.SIGHUP:
				if d.stopping() {
					d.log.Warn("SIGHUP ignored: chattyd is stopping")
					continue
				}
				d.reload()
			case syscall.SIGUSR1:
				d.reopenLog()
			default:
				if !requested && !d.stopping() {
					requested = true
					d.stopBegan.CompareAndSwap(0, time.Now().UnixNano())
					stop <- sig // buffered: taken by Run's select
					continue
				}
				since := time.Since(time.Unix(0, d.stopBegan.Load()))
				if since < d.forceAfter {
					d.log.WithField("signal", sig.String()).Infof("Signal ignored: the stop began %s ago; a second signal stops at once if it comes a second or more later", since.Round(time.Millisecond))
					continue
				}
				d.log.WithField("signal", sig.String()).Warn("Second signal: stopping at once")
				d.forceOnce.Do(func() { close(d.forced) })
			}
		}
	}
}
