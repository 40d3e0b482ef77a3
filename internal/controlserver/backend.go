package controlserver

import (
	"errors"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/message"
)

// Backend is what the control server controls: the daemon. Its methods are
// called concurrently from request handlers and must be safe for that.
type Backend interface {
	// Status returns the daemon's current state.
	Status() control.Status
	// Clients returns the connected clients.
	Clients() []control.Client
	// Workers returns the pool's slots.
	Workers() []control.Worker
	// Send broadcasts a validated message and returns its sequence number.
	Send(m message.Message) (seq uint64, err error)
	// Scale sets the number of workers to n, already checked to be within
	// 0..Options.MaxWorkers, and returns the previous number.
	Scale(n int) (old int, err error)
	// Identity returns the daemon's public identity, or ErrNoIdentity.
	Identity() (control.Identity, error)
	// DeadLetters returns the work queue's poison lines, or ErrNoQueue.
	DeadLetters() ([]control.DeadLetter, error)
	// Retry queues the dead letter seq again: ErrNoQueue without a work
	// queue, ErrNotFound when no dead letter has that number.
	Retry(seq uint64) error
	// Stop asks the daemon to shut down. It must return promptly, without
	// waiting for the shutdown (the control server's Run waits for it):
	// cancelling the daemon's run context is the expected implementation.
	Stop()
}

// Errors a Backend returns, possibly wrapped, to choose the HTTP status.
// Any other error is answered with 500.
var (
	// ErrInvalid means the request cannot be carried out as asked: 400.
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable means the daemon cannot do it now, for example while
	// shutting down: 503.
	ErrUnavailable = errors.New("unavailable")
	// ErrNoQueue means the daemon runs without a work queue: 409.
	ErrNoQueue = errors.New("no work queue: chattyd broadcasts (broadcast.delivery: all); set broadcast.delivery: one for a work queue")
	// ErrNotFound means the thing asked for does not exist: 404.
	ErrNotFound = errors.New("not found")
	// ErrNoIdentity means the daemon runs without an identity: 404.
	ErrNoIdentity = errors.New("no identity configured; set identity.key_file or identity.generate in chattyd's configuration")
)
