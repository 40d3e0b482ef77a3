package daemon

import (
	"fmt"
	"os"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/version"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/sirupsen/logrus"
)

// backend serves the control socket's requests from the daemon's parts.
// Every method is safe for concurrent use.
type backend struct{ d *Daemon }

var _ controlserver.Backend = backend{}

// Status implements controlserver.Backend.
func (b backend) Status() control.Status {
	d := b.d
	st := d.listeners.stats()
	slots := b.Workers()
	running := 0
	for _, w := range slots {
		if w.PID != 0 {
			running++
		}
	}
	started := d.started
	feedState, feedDetail := d.feedStatus()
	return control.Status{
		Version:       version.String(),
		PID:           os.Getpid(),
		StartedAt:     started,
		UptimeSeconds: time.Since(started).Seconds(),
		Listeners:     d.listeners.status(),
		Feed: control.FeedStatus{
			Source:      d.source.Name(),
			State:       feedState,
			Detail:      feedDetail,
			Lines:       d.feedLines.Load(),
			Bytes:       d.feedBytes.Load(),
			Dropped:     d.source.Dropped(),
			Undelivered: st.Undelivered,
		},
		Clients: control.ClientsSummary{
			Connected:      st.Connected,
			Accepted:       st.Accepted,
			Refused:        st.Refused,
			SlowConsumers:  st.SlowConsumers,
			IdleClosed:     st.IdleClosed,
			AcksGood:       st.AcksGood,
			AcksMismatched: st.AcksMismatched,
			KeepAlives:     st.KeepAlives,
			RejectedFrames: st.Rejected,
			TLSFailed:      st.Handshakes,
			AuthFailed:     st.AuthFailed,
			RateLimited:    st.RateLimited,
			UnknownLines:   st.UnknownLines,

			Authenticating:         st.Authenticating,
			UnauthenticatedRefused: st.UnauthenticatedRefused,

			Resumed:        st.Resumed,
			ResumeGaps:     st.Gaps,
			ResumeGapLines: st.GapLines,
		},
		Pool: control.PoolStatus{
			Desired:  d.pool.Size(),
			Running:  running,
			Restarts: d.pool.Restarts(),
			Slots:    slots,
		},
		Stream: d.listeners.retained(),
	}
}

// Clients implements controlserver.Backend.
func (b backend) Clients() []control.Client {
	cs := b.d.listeners.clients()
	out := make([]control.Client, len(cs))
	for i, c := range cs {
		out[i] = control.Client{
			ID:             c.ID,
			Remote:         c.Remote,
			Listener:       b.d.listeners.nameOf(c),
			ConnectedAt:    c.ConnectedAt,
			QueueBytes:     int64(c.QueueBytes),
			QueueLines:     int64(c.QueueLines),
			AckLag:         int64(c.AckLag),
			LinesSent:      c.LinesSent,
			AcksGood:       c.AcksGood,
			AcksMismatched: c.AcksMismatched,
			KeepAlives:     c.KeepAlives,
			UnknownLines:   c.UnknownLines,
			Key:            c.Key,
		}
	}
	return out
}

// Workers implements controlserver.Backend.
func (b backend) Workers() []control.Worker {
	slots := b.d.pool.Slots()
	out := make([]control.Worker, len(slots))
	now := time.Now()
	for i, s := range slots {
		w := control.Worker{
			Slot:      s.Slot,
			PID:       s.PID,
			State:     s.State,
			StartedAt: s.Started,
			Restarts:  s.Restarts,
			LastExit:  s.LastExit,
		}
		if !s.Started.IsZero() {
			w.UptimeSeconds = now.Sub(s.Started).Seconds()
		}
		out[i] = w
	}
	return out
}

// Send implements controlserver.Backend: the message goes through the same logs
// as feed lines, so it is ordered with them and lossless the same way; the
// text listener sends its text line, the signed listener the message with
// its type.
func (b backend) Send(m message.Message) (uint64, error) {
	d := b.d
	if d.stopping() {
		return 0, fmt.Errorf("%w: chattyd is stopping", controlserver.ErrUnavailable)
	}
	seq := d.listeners.publishMessage(m)
	d.log.WithField("type", m.Type.String()).WithField("seq", seq).
		Log(logLevel(m.Type), "Message sent: "+m.Text)
	return seq, nil
}

// Scale implements controlserver.Backend.
func (b backend) Scale(n int) (int, error) {
	if b.d.stopping() {
		return 0, fmt.Errorf("%w: chattyd is stopping", controlserver.ErrUnavailable)
	}
	return b.d.pool.Scale(n) // the pool checks n and logs the change
}

// Identity implements controlserver.Backend.
func (b backend) Identity() (control.Identity, error) {
	id := b.d.id
	if id == nil {
		return control.Identity{}, controlserver.ErrNoIdentity
	}
	return control.Identity{
		PublicKey:   identity.AuthorizedKeyLine(id.Public, "chattyd"),
		Fingerprint: id.Fingerprint(),
	}, nil
}

// Stop implements controlserver.Backend.
func (b backend) Stop() { b.d.Stop() }

// logLevel returns the level at which the daemon logs a message of type t:
// error for Critical and Error, warning for Warning, debug for Debug and
// info for the others.
func logLevel(t message.Type) logrus.Level {
	switch t {
	case message.Critical, message.Error:
		return logrus.ErrorLevel
	case message.Warning:
		return logrus.WarnLevel
	case message.Debug:
		return logrus.DebugLevel
	}
	return logrus.InfoLevel
}
