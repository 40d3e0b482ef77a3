package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/procstat"
)

// slot is one numbered place in the pool and the goroutine that keeps a
// worker running in it.
type slot struct {
	num  int           // the slot number, from 1
	stop chan struct{} // closed when the slot must stop for good
	done chan struct{} // closed when its goroutine has ended, process reaped
	// prev is an earlier slot with the same number that is still stopping;
	// this one starts its process only when prev is done.
	prev *slot

	// Guarded by Pool.mu.
	retired bool // stop is closed
	status  SlotStatus

	rep replayState // guarded by Pool.rep.mu
}

func newSlot(n int, prev *slot) *slot {
	return &slot{
		num:    n,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		prev:   prev,
		status: SlotStatus{Slot: n, State: StateStarting},
	}
}

// Run starts the slots and the forking goroutine, and blocks until ctx is
// done. Then it stops every worker (SIGTERM to each process group, SIGKILL
// after StopTimeout), waits until all are reaped and returns nil. Run may
// be called only once.
func (p *Pool) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.ran {
		p.mu.Unlock()
		return ErrRunTwice
	}
	p.ran, p.running = true, true
	forkerDone := make(chan struct{})
	go func() {
		defer close(forkerDone)
		forker(p.spawns, p.guard)
	}()
	keeperStop, keeperDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(keeperDone)
		p.keepGuard(keeperStop)
	}()
	p.log.Infof("Starting %s", workers(p.opts.Size))
	p.reconcileLocked()
	p.mu.Unlock()

	<-ctx.Done()

	p.mu.Lock()
	p.running = false
	n := 0
	for _, s := range slices.Backward(p.slots) {
		if !s.retired {
			n++
		}
		p.retireLocked(s)
	}
	p.mu.Unlock()
	p.log.Infof("Stopping %s", workers(n))
	p.wg.Wait()
	// Every worker is reaped: the guard knows no group and exits quietly.
	close(keeperStop)
	<-keeperDone
	p.guard.stop(p.options().StopTimeout)
	// Only now may the forking thread exit: no worker or guard is left
	// whose parent-death signal it could fire.
	close(p.spawns)
	<-forkerDone
	p.log.Info("All workers stopped")
	return nil
}

// runSlot keeps a worker running in s until s is stopped.
func (p *Pool) runSlot(s *slot) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		p.slots = slices.DeleteFunc(p.slots, func(x *slot) bool { return x == s })
		idle := len(p.slots) == 0
		p.mu.Unlock()
		if idle { // no worker, no guard: the next start makes a new one
			reply := make(chan error, 1)
			p.spawns <- spawnRequest{retireGuard: true, reply: reply}
			<-reply
		}
		close(s.done)
	}()
	if s.prev != nil {
		<-s.prev.done // never two processes in one slot; prev is stopping
		s.prev = nil
	}
	log := p.log.WithField(logging.FieldProcess, s.num)
	var backoff time.Duration
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		opts := p.options()
		w, err := p.start(s, opts, log)
		if errors.Is(err, errStopped) {
			return
		}
		if err != nil {
			if errors.Is(err, errGuard) {
				log.Errorf("Cannot start the worker: %v", err)
			} else {
				log.Errorf("Cannot start the worker: %v (check pool.command)", err)
			}
			backoff = nextBackoff(backoff, opts)
			p.setStatus(s, func(st *SlotStatus) {
				st.LastExit = "failed to start: " + err.Error()
			})
		} else {
			p.setStatus(s, func(st *SlotStatus) {
				st.State, st.PID, st.Started = StateRunning, w.pid, w.started
			})
			how, stopped := p.supervise(s, w, opts.StopTimeout, log)
			p.workerGone(s, s.stop)
			lived := time.Since(w.started)
			p.setStatus(s, func(st *SlotStatus) {
				st.PID, st.Started, st.LastExit = 0, time.Time{}, how
			})
			if stopped {
				log.Infof("Process stopped (%s)", how)
				return
			}
			log.Infof("Process terminated (%s) and was restarted", how)
			if lived >= opts.MinUptime {
				backoff = 0
				p.restarts.Add(1)
				p.setStatus(s, func(st *SlotStatus) { st.State = StateStarting; st.Restarts++ })
				continue
			}
			backoff = nextBackoff(backoff, opts)
			log.Warnf("The worker lived only %s (less than %s); next start in %s",
				lived.Round(time.Millisecond), opts.MinUptime, backoff)
		}
		p.restarts.Add(1)
		p.setStatus(s, func(st *SlotStatus) { st.State = StateBackoff; st.Restarts++ })
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
			p.setStatus(s, func(st *SlotStatus) { st.State = StateStarting })
		case <-s.stop:
			t.Stop()
			return
		}
	}
}

// keepGuard replaces a guard that died unasked: at once, unless the one
// it replaced lived less than guardMinLife, and then after a growing delay
// (the pool's backoff), as after each failed start. It returns when stop
// is closed.
func (p *Pool) keepGuard(stop <-chan struct{}) {
	var delay time.Duration
	started := time.Now()
	for {
		select {
		case <-p.guard.lost:
		case <-stop:
			return
		}
		if time.Since(started) >= guardMinLife {
			delay = 0
		} else {
			delay = nextBackoff(delay, p.options())
		}
		for {
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-stop:
					t.Stop()
					return
				}
			}
			reply := make(chan error, 1)
			p.spawns <- spawnRequest{reply: reply}
			err := <-reply
			if err == nil {
				break
			}
			delay = nextBackoff(delay, p.options())
			p.log.Errorf("Cannot start a new worker guard: %v; trying again in %s", err, delay)
		}
		started = time.Now()
	}
}

// nextBackoff doubles the delay, from BackoffInitial up to BackoffMax.
func nextBackoff(d time.Duration, o Options) time.Duration {
	if d <= 0 {
		return o.BackoffInitial
	}
	return min(2*d, o.BackoffMax)
}

// setStatus changes s's status under the pool's lock.
func (p *Pool) setStatus(s *slot, change func(*SlotStatus)) {
	p.mu.Lock()
	change(&s.status)
	p.mu.Unlock()
}

// supervise waits until w exits, or s is stopped and then stops w. Either
// way it kills what w left in its process group and reaps w. It returns
// how w ended and whether it was stopped on purpose.
//
// A worker stopped by a signal (SIGSTOP, SIGTSTP: state T) for longer than
// stopTimeout is killed, so that the slot runs a worker again: a stopped
// worker reads nothing, the broadcaster drops its connection as a slow
// consumer or an idle client, and nothing else would ever end it.
func (p *Pool) supervise(s *slot, w *process, stopTimeout time.Duration, log *logrus.Entry) (how string, stopped bool) {
	check := time.NewTicker(min(stopTimeout/4, stoppedCheckMax))
	defer check.Stop()
	var since time.Time // when the worker was first seen stopped; zero if running
	for running := true; running; {
		select {
		case <-check.C:
			switch {
			case !processStopped(w.pid):
				since = time.Time{}
			case since.IsZero():
				since = time.Now()
			case time.Since(since) >= stopTimeout:
				log.Warnf("The worker has been stopped by a signal for over %s and reads nothing; sending SIGKILL", stopTimeout)
				w.signalGroup(syscall.SIGKILL)
				<-w.exited
				running = false
			}
		case <-w.exited:
			running = false
			select {
			case <-s.stop:
				stopped = true // it ended on its own just as it was told to stop
			default:
			}
		case <-s.stop:
			running = false
			stopped = true
			p.setStatus(s, func(st *SlotStatus) { st.State = StateStopping })
			w.signalGroup(syscall.SIGTERM)
			t := time.NewTimer(stopTimeout)
			select {
			case <-w.exited:
				t.Stop()
			case <-t.C:
				log.Warnf("The worker did not stop within %s of SIGTERM; sending SIGKILL", stopTimeout)
				w.signalGroup(syscall.SIGKILL)
				<-w.exited
			}
		}
	}
	// w has exited but is not reaped, so its PID still names its group;
	// the guard must forget the group before the number can be reused.
	w.signalGroup(syscall.SIGKILL)
	p.guard.forget(w.pid)
	return w.reap(), stopped
}

// stoppedCheckMax bounds how often supervise looks whether its worker is
// stopped; shorter stop timeouts look more often.
const stoppedCheckMax = time.Second

// processStopped reports whether process pid is stopped by a signal
// (state T in /proc/PID/stat). A process being traced (state t) is not:
// a debugger holds it on purpose.
func processStopped(pid int) bool {
	s, err := procstat.Read(pid)
	return err == nil && s.State == 'T'
}

// workers says n workers in words: "1 worker", "2 workers".
func workers(n int) string {
	if n == 1 {
		return "1 worker"
	}
	return fmt.Sprintf("%d workers", n)
}
