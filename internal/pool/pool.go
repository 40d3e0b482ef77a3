// Package pool supervises chattyd's worker processes: it keeps one process
// running in each of N numbered slots, restarts a slot's process when it
// exits (with exponential backoff when it keeps dying young), scales the
// number of slots up and down without touching the slots that stay, and on
// shutdown leaves no process behind.
//
// Each worker runs in its own process group, which lives and dies with it:
// when the worker exits, anything left in its group is killed. Workers get
// SIGKILL if chattyd itself dies (Linux parent-death signal), and with
// Options.Guard so does everything left in their groups, however chattyd
// died (see guard.go). Their output is logged line by line with the slot
// as the "process" field.
//
// With Options.Replay a slot carries on where its last worker stopped:
// the broadcaster asks Claim about each new connection while a slot
// awaits its worker, and the worker's connection starts after the last
// line its predecessor acknowledged (see replay.go).
package pool

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/chatty-dev/chatty/internal/pool/poolsize"
)

// Options configures a pool.
type Options struct {
	// Size is the number of slots, from 0 to poolsize.Max.
	Size int
	// Command is the worker's program and arguments, run directly (no
	// shell). The placeholders {host}, {port}, {addr} and {slot} are
	// replaced in every element.
	Command []string
	// Env holds KEY=VALUE entries added to chattyd's own environment for
	// every worker. CHATTY_SLOT, CHATTY_ADDR, CHATTY_HOST and CHATTY_PORT
	// are always set.
	Env []string
	// Addr is the broadcaster's address, host:port, given to workers.
	Addr string
	// MinUptime is how long a worker must live for its exit not to count
	// as a crash; a shorter life delays the next start.
	MinUptime time.Duration
	// BackoffInitial is the first delay after a crash or a failed start;
	// it doubles with each further one up to BackoffMax, and resets after
	// a worker lives MinUptime.
	BackoffInitial, BackoffMax time.Duration
	// StopTimeout is how long a worker has between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	// Credentials, when set, is called before each start of slot's
	// worker for a secret only that process gets: the worker reads it
	// from the file descriptor named by CHATTY_CREDENTIALS_FD (a pipe,
	// never a file on disk or an argument). release is called once the
	// process has been reaped, or at once if it could not start.
	Credentials func(slot int) (secret []byte, release func(), err error)
	// Guard, when set, is the command of the worker guard ("chattyd
	// guard", which calls RunGuard): a process that kills what is left
	// of every worker's process group when chattyd dies, by any signal.
	// The pool starts it before its first worker, replaces it should it
	// die, and ends it when no slot is left. It is read by New;
	// SetOptions keeps it.
	Guard []string
	// Replay makes each slot carry on where its last worker stopped: the
	// next worker's connection, once recognised (see Claim), starts after
	// the last line its predecessor acknowledged. It applies from each
	// slot's next start.
	Replay bool
}

// validate reports every invalid option at once.
func (o *Options) validate() error {
	var errs []error
	if err := checkSize(o.Size); err != nil {
		errs = append(errs, err)
	}
	if len(o.Command) == 0 || o.Command[0] == "" {
		errs = append(errs, errors.New("command is empty; it needs at least the worker program"))
	}
	if _, port, err := net.SplitHostPort(o.Addr); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("address %q is not host:port", o.Addr))
	}
	for _, kv := range o.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("environment entry %q is not KEY=VALUE", kv))
		}
	}
	if o.MinUptime < 0 {
		errs = append(errs, fmt.Errorf("min uptime must not be negative, got %s", o.MinUptime))
	}
	if o.BackoffInitial <= 0 || o.BackoffMax < o.BackoffInitial {
		errs = append(errs, fmt.Errorf("backoff [%s, %s] is invalid; initial must be positive and max at least initial", o.BackoffInitial, o.BackoffMax))
	}
	if o.StopTimeout <= 0 {
		errs = append(errs, fmt.Errorf("stop timeout must be positive, got %s", o.StopTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid pool options: %w", err)
	}
	return nil
}

// checkSize returns an error unless n is a size a pool can have.
func checkSize(n int) error {
	if n < 0 || n > poolsize.Max {
		return fmt.Errorf("pool size must be from 0 to %d, got %d", poolsize.Max, n)
	}
	return nil
}

// The states of a slot, as SlotStatus.State reports them.
const (
	StateStarting = "starting" // waiting for its process to start
	StateRunning  = "running"  // its process is running
	StateBackoff  = "backoff"  // waiting before the next start
	StateStopping = "stopping" // stopping for good: scaled away or shutdown
)

// SlotStatus describes one slot at one moment.
type SlotStatus struct {
	Slot     int
	PID      int       // 0 when no process is running
	State    string    // one of the State* constants
	Started  time.Time // when the current process started; zero if none
	Restarts int       // starts after the first: after exits and failed starts
	LastExit string    // how the last process ended, "" if none has
	Replay   ReplayStatus
}

// ErrRunTwice is returned by a second call of Run.
var ErrRunTwice = errors.New("pool: Run called more than once")

// Pool supervises the workers. Create it with New; all methods are safe
// for concurrent use.
type Pool struct {
	log *logrus.Entry
	// spawns carries start requests to the forking goroutine; see forker.
	spawns chan spawnRequest
	guard  *guardian

	restarts atomic.Uint64 // restarts of every slot there ever was
	rep      replay        // which slots await their worker; see replay.go

	mu      sync.Mutex // guards the fields below and every slot's status
	opts    Options    // current options; Size is the desired size
	slots   []*slot    // every slot whose goroutine runs, oldest first
	running bool       // Run has started the slots and is not shutting down
	ran     bool       // Run has been called
	wg      sync.WaitGroup
}

// New checks opts and returns a pool that starts nothing until Run.
func New(opts Options, log *logrus.Entry) (*Pool, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.Command = slices.Clone(opts.Command)
	opts.Env = slices.Clone(opts.Env)
	var guard []string
	if len(opts.Guard) > 0 {
		guard = slices.Clone(opts.Guard)
	}
	return &Pool{
		log:    log,
		spawns: make(chan spawnRequest),
		guard:  newGuardian(guard, log),
		opts:   opts,
	}, nil
}

// Restarts counts the restarts of every slot since the pool was created,
// including slots scaled away since; it never decreases.
func (p *Pool) Restarts() uint64 { return p.restarts.Load() }

// Size returns the desired number of slots.
func (p *Pool) Size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opts.Size
}

// Scale sets the number of slots to n and returns the previous number.
// Only the difference changes: new slots are started above the current
// ones, and the highest slots are stopped. Before Run it only records n.
func (p *Pool) Scale(n int) (old int, err error) {
	if err := checkSize(n); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old = p.opts.Size
	p.opts.Size = n
	if p.running {
		if n != old {
			p.log.Infof("Scaling the worker pool from %d to %d", old, n)
		}
		p.reconcileLocked()
	}
	return old, nil
}

// SetOptions replaces the options, as on a configuration reload. The
// command, address, environment and timings apply to the next start of
// each slot; running workers are not restarted. A new Size scales the pool.
// Invalid options change nothing and are reported.
func (p *Pool) SetOptions(o Options) error {
	if err := o.validate(); err != nil {
		return err
	}
	o.Command = slices.Clone(o.Command)
	o.Env = slices.Clone(o.Env)
	want := o.Size
	p.mu.Lock()
	o.Size = p.opts.Size // Scale changes it, and logs the change
	o.Guard = p.opts.Guard
	p.opts = o
	p.mu.Unlock()
	if want != o.Size {
		_, err := p.Scale(want)
		return err
	}
	return nil
}

// Slots returns the status of every slot, by slot number. A slot being
// scaled away is listed, as "stopping", until its process is gone, so a
// number can appear twice while its new slot waits for the old one.
func (p *Pool) Slots() []SlotStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rep.mu.Lock()
	defer p.rep.mu.Unlock()
	out := make([]SlotStatus, 0, len(p.slots))
	for _, s := range p.slots {
		st := s.status
		st.Replay = s.replayStatusLocked()
		out = append(out, st)
	}
	slices.SortStableFunc(out, func(a, b SlotStatus) int { return a.Slot - b.Slot })
	return out
}

// options returns a copy of the current options.
func (p *Pool) options() Options {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opts
}

// reconcileLocked starts the missing slots up to the desired size and
// stops those above it, highest first.
func (p *Pool) reconcileLocked() {
	active := make(map[int]*slot)
	retiring := make(map[int]*slot) // the newest retiring slot per number
	for _, s := range p.slots {
		if s.retired {
			retiring[s.num] = s
		} else {
			active[s.num] = s
		}
	}
	for n := 1; n <= p.opts.Size; n++ {
		if active[n] != nil {
			continue
		}
		s := newSlot(n, retiring[n])
		p.slots = append(p.slots, s)
		p.wg.Add(1)
		go p.runSlot(s)
	}
	var extra []*slot
	for n, s := range active {
		if n > p.opts.Size {
			extra = append(extra, s)
		}
	}
	slices.SortFunc(extra, func(a, b *slot) int { return b.num - a.num })
	for _, s := range extra {
		p.retireLocked(s)
	}
}

// retireLocked tells s to stop its worker for good.
func (p *Pool) retireLocked(s *slot) {
	if s.retired {
		return
	}
	s.retired = true
	close(s.stop)
}
