package daemon

import (
	"fmt"
	"os"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"
)

// backend serves the control socket's requests from the daemon's parts.
// Every method is safe for concurrent use.
type backend struct{ d *Daemon }

var _ control.Backend = backend{}

// Status implements control.Backend.
func (b backend) Status() control.Status {
	d := b.d
	st := d.bcast.Stats()
	if d.signed != nil {
		ss := d.signed.Stats()
		st.Undelivered = min(st.Undelivered, ss.Undelivered) // a line no client of either got
		st.Connected += ss.Connected
		st.Authenticating += ss.Authenticating
		st.Accepted += ss.Accepted
		st.Refused += ss.Refused
		st.UnauthenticatedRefused += ss.UnauthenticatedRefused
		st.SlowConsumers += ss.SlowConsumers
		st.IdleClosed += ss.IdleClosed
		st.AcksGood += ss.AcksGood
		st.AcksMismatched += ss.AcksMismatched
		st.KeepAlives += ss.KeepAlives
		st.Rejected += ss.Rejected
		st.Handshakes += ss.Handshakes
		st.AuthFailed += ss.AuthFailed
		st.RateLimited += ss.RateLimited
	}
	slots := b.Workers()
	running := 0
	for _, w := range slots {
		if w.PID != 0 {
			running++
		}
	}
	started := d.Started()
	return control.Status{
		Version:       Version,
		PID:           os.Getpid(),
		StartedAt:     started,
		UptimeSeconds: time.Since(started).Seconds(),
		Listeners:     b.listeners(),
		Feed: control.FeedStatus{
			Source:      d.source.Name(),
			State:       d.FeedState(),
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
		},
		Pool: control.PoolStatus{
			Desired:  d.pool.Size(),
			Running:  running,
			Restarts: d.pool.Restarts(),
			Slots:    slots,
		},
	}
}

func (b backend) listeners() []control.Listener {
	addrs := b.d.bcast.Addrs()
	out := []control.Listener{{Name: "broadcast", Addr: addrs[0].String(), Protocol: "tcp"}}
	if len(addrs) > 1 {
		out = append(out, control.Listener{Name: "broadcast-tls", Addr: addrs[1].String(), Protocol: "tls"})
	}
	if s := b.d.signed; s != nil {
		proto := "signed"
		if b.d.signedTLS != nil {
			proto = "signed+tls"
		}
		out = append(out, control.Listener{Name: "broadcast-signed", Addr: s.Addr().String(), Protocol: proto})
	}
	return out
}

// Clients implements control.Backend.
func (b backend) Clients() []control.Client {
	cs := b.d.bcast.Clients()
	if s := b.d.signed; s != nil {
		cs = append(cs, s.Clients()...)
	}
	out := make([]control.Client, len(cs))
	for i, c := range cs {
		out[i] = control.Client{
			ID:             c.ID,
			Remote:         c.Remote,
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

// Workers implements control.Backend.
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

// Send implements control.Backend: the message goes through the same logs
// as feed lines, so it is ordered with them and lossless the same way; the
// text listener sends its text line, the signed listener the message with
// its type.
func (b backend) Send(m message.Message) (uint64, error) {
	d := b.d
	if d.stopping.Load() {
		return 0, fmt.Errorf("%w: chattyd is stopping", control.ErrUnavailable)
	}
	seq := d.publishMessage(m)
	d.log.WithField("type", m.Type.String()).WithField("seq", seq).
		Log(m.LogLevel(), "Message sent: "+m.Text)
	return seq, nil
}

// Scale implements control.Backend.
func (b backend) Scale(n int) (int, error) {
	if b.d.stopping.Load() {
		return 0, fmt.Errorf("%w: chattyd is stopping", control.ErrUnavailable)
	}
	return b.d.Scale(n)
}

// Identity implements control.Backend.
func (b backend) Identity() (control.Identity, error) {
	id := b.d.id
	if id == nil {
		return control.Identity{}, control.ErrNoIdentity
	}
	return control.Identity{
		PublicKey:   identity.AuthorizedKeyLine(id.Public, "chattyd"),
		Fingerprint: id.Fingerprint(),
	}, nil
}

// Stop implements control.Backend.
func (b backend) Stop() { b.d.Stop() }
