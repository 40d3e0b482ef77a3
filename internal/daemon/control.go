package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/pool"
	"github.com/chatty-dev/chatty/internal/version"
	"github.com/chatty-dev/chatty/internal/workqueue"
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
	status := control.Status{
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
			Desired:      d.pool.Size(),
			Running:      running,
			Restarts:     d.pool.Restarts(),
			Replay:       d.config().Pool.Replay.String(),
			ReplayTotals: replayCounters(d.pool.ReplayTotals()),
			Slots:        slots,
		},
		Stream: d.listeners.retained(),
		NATS:   d.natsStatus(),
	}
	if q := d.listeners.queue; q != nil {
		qs := q.Stats()
		c := &status.Clients
		c.Connected += qs.Connected
		c.Accepted += qs.Accepted
		c.Refused += qs.Refused
		c.AcksGood += qs.Acked
		c.AcksMismatched += qs.Mismatched
		c.KeepAlives += qs.KeepAlives
		c.UnknownLines += qs.UnknownLines
		status.Queue = queueStatus(qs, q.Workers())
	}
	return status
}

// queueStatus reports the work queue's state.
func queueStatus(qs workqueue.Stats, ws []workqueue.WorkerInfo) *control.QueueStatus {
	out := &control.QueueStatus{
		Waiting:              qs.Waiting,
		WaitingBytes:         qs.WaitingBytes,
		InFlight:             qs.InFlight,
		OldestWaitingSeconds: qs.OldestWaiting.Seconds(),
		FeedHeld:             qs.FeedHeld,
		Queued:               qs.Published,
		Acked:                qs.Acked,
		Mismatched:           qs.Mismatched,
		Redeliveries:         qs.Redeliveries,
		AckTimeouts:          qs.AckTimeouts,
		DeadLetters:          qs.DeadLetters,
		DeadLettered:         qs.DeadLettered,
		DeadLettersDropped:   qs.DeadLettersDropped,
		Workers:              make([]control.QueueWorker, len(ws)),
	}
	for i, w := range ws {
		out.Workers[i] = control.QueueWorker{
			ID: w.ID, Remote: w.Remote, ConnectedAt: w.ConnectedAt, InFlight: w.InFlight,
			Delivered: w.Delivered, Acked: w.Acked, Mismatched: w.Mismatched,
		}
	}
	return out
}

// natsStatus reports the shared feed; nil without one.
func (d *Daemon) natsStatus() *control.NATSStatus {
	if d.shared == nil {
		return nil
	}
	return d.shared.status()
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
	if q := b.d.listeners.queue; q != nil {
		for _, w := range q.Workers() {
			out = append(out, control.Client{
				ID: w.ID, Remote: w.Remote, Listener: control.ListenerBroadcast, ConnectedAt: w.ConnectedAt,
				QueueLines: int64(w.InFlight), AckLag: int64(w.InFlight), LinesSent: w.Delivered,
				AcksGood: w.Acked, AcksMismatched: w.Mismatched, KeepAlives: w.KeepAlives, UnknownLines: w.UnknownLines,
			})
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
			Awaiting:  s.Replay.Awaiting,
			LastAcked: s.Replay.LastAcked,
			Replay:    replayCounters(s.Replay.ReplayStats),
		}
		if !s.Started.IsZero() {
			w.UptimeSeconds = now.Sub(s.Started).Seconds()
		}
		out[i] = w
	}
	return out
}

// sendHoldTimeout bounds how long chattyctl send waits for room in the
// NATS publisher's buffer (NATS unreachable and the buffer full).
const sendHoldTimeout = 10 * time.Second

// Send implements controlserver.Backend: the message goes through the same logs
// as feed lines, so it is ordered with them and lossless the same way; the
// text listener sends its text line, the signed listener the message with
// its type.
func (b backend) Send(m message.Message) (uint64, error) {
	d := b.d
	if d.stopping() {
		return 0, fmt.Errorf("%w: chattyd is stopping", controlserver.ErrUnavailable)
	}
	var seq uint64
	if d.shared != nil {
		// Into the stream as its text line: the stream numbers it, and
		// every edge broadcasts it as a feed line.
		ctx, cancel := context.WithTimeout(context.Background(), sendHoldTimeout)
		defer cancel()
		if err := d.shared.publisher.Publish(ctx, [][]byte{m.AppendText(nil)}); err != nil {
			return 0, fmt.Errorf("%w: %v", controlserver.ErrUnavailable, err)
		}
	} else {
		var err error
		seq, err = d.listeners.publishMessage(m)
		if errors.Is(err, workqueue.ErrFull) {
			return 0, fmt.Errorf("%w: %v", controlserver.ErrUnavailable, err)
		}
		if err != nil {
			return 0, err
		}
	}
	d.log.WithField("type", m.Type.String()).WithField("seq", seq).
		Log(logLevel(m.Type), "Message sent: "+m.Text)
	return seq, nil
}

// DeadLetters implements controlserver.Backend.
func (b backend) DeadLetters() ([]control.DeadLetter, error) {
	q := b.d.listeners.queue
	if q == nil {
		return nil, controlserver.ErrNoQueue
	}
	ds := q.DeadLetters()
	out := make([]control.DeadLetter, len(ds))
	for i, dl := range ds {
		out[i] = control.DeadLetter{Seq: dl.Seq, Line: strings.ToValidUTF8(string(dl.Line), "\uFFFD"), Deliveries: dl.Deliveries, At: dl.At}
	}
	return out, nil
}

// Retry implements controlserver.Backend.
func (b backend) Retry(seq uint64) error {
	q := b.d.listeners.queue
	if q == nil {
		return controlserver.ErrNoQueue
	}
	err := q.Retry(seq)
	if errors.Is(err, workqueue.ErrNoDeadLetter) {
		return fmt.Errorf("%w: no dead letter has sequence number %d; chattyctl deadletters lists them", controlserver.ErrNotFound, seq)
	}
	return err
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

func replayCounters(r pool.ReplayStats) control.ReplayCounters {
	return control.ReplayCounters{
		Identified: r.Identified,
		Resumed:    r.Resumed,
		Gaps:       r.Gaps,
		GapLines:   r.GapLines,
		Duplicates: r.Duplicates,
	}
}
