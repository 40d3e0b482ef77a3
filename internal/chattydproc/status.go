package chattydproc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/control"
)

// statusTimeout bounds one status request of Ready.
const statusTimeout = 2 * time.Second

// Ready polls chattyd's /v1/status until this chattyd answers it, and
// returns that status. Once it answers, every listener is bound: chattyd
// binds them before it serves its control socket. It fails if chattyd
// exits first, if it has not answered within timeout, or if ctx is done.
func (p *Process) Ready(ctx context.Context, timeout time.Duration) (control.Status, error) {
	if p.ctl == nil {
		return control.Status{}, errors.New("chattyd's status: its control socket is unknown (Options.ControlSocket)")
	}
	var (
		st      control.Status
		lastErr error
		ours    bool
	)
	answered := func() bool {
		if p.Exited() {
			return true
		}
		rctx, cancel := context.WithTimeout(ctx, statusTimeout)
		defer cancel()
		s, err := p.ctl.Status(rctx)
		switch {
		case err != nil:
			lastErr = err
			return false
		case s.PID != p.PID():
			// Another chattyd holds the socket; this one will
			// refuse to start, or has not replaced a stale one yet.
			lastErr = fmt.Errorf("process %d answers on %s, not chattyd (pid %d)", s.PID, p.ctl.Path(), p.PID())
			return false
		}
		st, ours = s, true
		return true
	}
	err := poll.Until(ctx, timeout, answered)
	switch {
	case ours:
		return st, nil
	case p.Exited():
		return control.Status{}, fmt.Errorf("chattyd exited with status %d before it answered on %s", p.code, p.ctl.Path())
	case lastErr != nil:
		return control.Status{}, fmt.Errorf("chattyd did not answer on %s: %w (%w)", p.ctl.Path(), lastErr, err)
	default:
		return control.Status{}, fmt.Errorf("chattyd did not answer on %s: %w", p.ctl.Path(), err)
	}
}

// Addrs are the bound addresses of chattyd's listeners; empty for one it
// does not run.
type Addrs struct {
	Text   string // control.ListenerBroadcast: broadcast.listen
	TLS    string // control.ListenerTLS: broadcast.tls.listen
	Signed string // control.ListenerSigned: broadcast.signed.listen
	// Sequenced is control.ListenerSequenced: broadcast.sequenced.listen.
	Sequenced string
	// WebSocket is control.ListenerWebSocket: broadcast.websocket.listen
	WebSocket string
}

// ListenerAddrs returns the addresses st reports.
func ListenerAddrs(st control.Status) Addrs {
	var a Addrs
	for _, l := range st.Listeners {
		switch l.Name {
		case control.ListenerBroadcast:
			a.Text = l.Addr
		case control.ListenerTLS:
			a.TLS = l.Addr
		case control.ListenerSigned:
			a.Signed = l.Addr
		case control.ListenerSequenced:
			a.Sequenced = l.Addr
		case control.ListenerWebSocket:
			a.WebSocket = l.Addr
		}
	}
	return a
}

// Addrs waits for chattyd as Ready does and returns where it listens.
func (p *Process) Addrs(ctx context.Context, timeout time.Duration) (Addrs, error) {
	st, err := p.Ready(ctx, timeout)
	if err != nil {
		return Addrs{}, err
	}
	return ListenerAddrs(st), nil
}
