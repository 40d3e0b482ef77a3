package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/urfave/cli/v2"
)

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func cmdStatus(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	st, err := cl.Status(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, st)
	}
	return printStatus(c.App.Writer, st)
}

// printStatus writes the status as a person reads it.
func printStatus(out io.Writer, st control.Status) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "chattyd %s, up %s (since %s)\n", st.Version, seconds(st.UptimeSeconds),
		st.StartedAt.UTC().Format("2006-01-02 15:04:05 UTC"))
	for _, l := range st.Listeners {
		fmt.Fprintf(w, "listener\t%s\t%s %s\n", l.Name, l.Protocol, l.Addr)
	}
	f := st.Feed
	state := f.State
	if f.Detail != "" {
		state += " (" + f.Detail + ")"
	}
	fmt.Fprintf(w, "feed\t%s\t%s; %d lines, %d bytes, %d dropped as too long, %d undelivered\n",
		f.Source, state, f.Lines, f.Bytes, f.Dropped, f.Undelivered)
	cs := st.Clients
	fmt.Fprintf(w, "clients\t%d connected\t%d accepted, %d refused, %d slow, %d idle closed; acks %d good, %d mismatched; %d keep-alives answered",
		cs.Connected, cs.Accepted, cs.Refused, cs.SlowConsumers, cs.IdleClosed, cs.AcksGood, cs.AcksMismatched, cs.KeepAlives)
	if cs.RejectedFrames > 0 {
		fmt.Fprintf(w, "; %d signed frames rejected", cs.RejectedFrames)
	}
	if cs.TLSFailed > 0 {
		fmt.Fprintf(w, "; %d TLS handshakes failed", cs.TLSFailed)
	}
	if cs.Authenticating > 0 {
		fmt.Fprintf(w, "; %d authenticating", cs.Authenticating)
	}
	if cs.AuthFailed > 0 {
		fmt.Fprintf(w, "; %d failed authentication", cs.AuthFailed)
	}
	if cs.UnauthenticatedRefused > 0 {
		fmt.Fprintf(w, "; %d refused with too many authenticating", cs.UnauthenticatedRefused)
	}
	if cs.RateLimited > 0 {
		fmt.Fprintf(w, "; %d messages over their rate", cs.RateLimited)
	}
	if cs.UnknownLines > 0 {
		fmt.Fprintf(w, "; %d unknown client lines", cs.UnknownLines)
	}
	if cs.Resumed > 0 {
		fmt.Fprintf(w, "; %d resumed", cs.Resumed)
	}
	if cs.ResumeGaps > 0 {
		fmt.Fprintf(w, "; %d told of a gap (%d lines no longer retained)", cs.ResumeGaps, cs.ResumeGapLines)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "pool\t%d of %d running\t%d restarts", st.Pool.Running, st.Pool.Desired, st.Pool.Restarts)
	if r := st.Pool.ReplayTotals; st.Pool.Replay != "" {
		fmt.Fprintf(w, "; replay %s: %d workers identified, %d resumed, %d gaps (%d lines), %d duplicate lines",
			st.Pool.Replay, r.Identified, r.Resumed, r.Gaps, r.GapLines, r.Duplicates)
	}
	fmt.Fprintln(w)
	if q := st.Queue; q != nil {
		held := ""
		if q.FeedHeld {
			held = "; full, the feed is held back"
		}
		fmt.Fprintf(w, "work queue\t%d waiting, %d in flight\toldest waiting %.1fs%s; %d queued, %d acked, %d redelivered, %d ack timeouts; %d dead letters (%d set aside, %d dropped)\n",
			q.Waiting, q.InFlight, q.OldestWaitingSeconds, held, q.Queued, q.Acked, q.Redeliveries, q.AckTimeouts,
			q.DeadLetters, q.DeadLettered, q.DeadLettersDropped)
		for _, qw := range q.Workers {
			fmt.Fprintf(w, "  worker %d\t%s\ton %s: %d in flight, %d delivered, %d acked, %d mismatched\n",
				qw.ID, qw.Remote, qw.Listener, qw.InFlight, qw.Delivered, qw.Acked, qw.Mismatched)
		}
	}
	if r := st.Stream; r.ID != "" {
		if r.Lines > 0 {
			fmt.Fprintf(w, "stream\t%s\tlines %d to %d retained (%d lines, %d bytes)\n", r.ID, r.First, r.Last, r.Lines, r.Bytes)
		} else {
			fmt.Fprintf(w, "stream\t%s\tnothing retained; next line %d\n", r.ID, r.Last+1)
		}
	}
	if n := st.NATS; n != nil {
		where := n.State
		switch n.Server {
		case "":
		case control.NATSServerInProcess:
			where += " in-process"
		default:
			where += " to " + n.Server
		}
		if n.Embedded {
			where += " (embedded server)"
		}
		fmt.Fprintf(w, "nats\t%s\tstream %s; %d reconnects, %d leader elections\n", where, n.Stream, n.Reconnects, n.Elections)
		p := n.Publish
		fmt.Fprintf(w, "nats publish\t%d lines, last %d\t%d of %d acks pending, %d bytes buffered; %d retries, %d held back",
			p.Lines, p.LastSeq, p.Pending, p.Window, p.Buffered, p.Retries, p.HeldBack)
		if p.Abandoned > 0 {
			fmt.Fprintf(w, ", %d abandoned", p.Abandoned)
		}
		fmt.Fprintln(w)
		if q := n.WorkQueue; q != nil {
			fmt.Fprintf(w, "nats work queue\t%d lines pulled (%d redelivered), %d held\t%d acknowledged to JetStream, %d failed acks, %d terminated\n",
				q.Messages, q.Redelivered, q.Held, q.Acked, q.AckFailures, q.Terminated)
		} else {
			c := n.Consume
			fmt.Fprintf(w, "nats consume\t%d lines, last %d (stream %d)\t%d gaps (%d lines missing); %d restarts",
				c.Lines, c.LastSeq, c.StreamSeq, c.Gaps, c.GapLines, c.Restarts)
			if c.Invalid > 0 {
				fmt.Fprintf(w, ", %d invalid messages", c.Invalid)
			}
			fmt.Fprintln(w)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(st.Pool.Slots) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	return printWorkers(out, st.Pool.Slots)
}

func printWorkers(out io.Writer, ws []control.Worker) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SLOT\tPID\tSTATE\tUPTIME\tRESTARTS\tLAST EXIT\tLAST ACKED\tRESUMED\tGAPS\tDUPLICATES")
	for _, s := range ws {
		pid := "-"
		if s.PID > 0 {
			pid = fmt.Sprint(s.PID)
		}
		last := s.LastExit
		if last == "" {
			last = "-"
		}
		acked := "-"
		if s.LastAcked > 0 {
			acked = fmt.Sprint(s.LastAcked)
		}
		r := s.Replay
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d (%d lines)\t%d\n", s.Slot, pid, s.State, seconds(s.UptimeSeconds), s.Restarts, last,
			acked, r.Resumed, r.Gaps, r.GapLines, r.Duplicates)
	}
	return w.Flush()
}

func printClients(out io.Writer, cs []control.Client) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tREMOTE\tCONNECTED\tQUEUE LINES\tQUEUE BYTES\tACK LAG\tSENT\tACKS GOOD\tACKS BAD\tKEEP-ALIVES\tUNKNOWN\tKEY")
	for _, c := range cs {
		key := c.Key
		if key == "" {
			key = "-"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", c.ID, c.Remote,
			c.ConnectedAt.UTC().Format("2006-01-02 15:04:05"), c.QueueLines, c.QueueBytes, c.AckLag,
			c.LinesSent, c.AcksGood, c.AcksMismatched, c.KeepAlives, c.UnknownLines, key)
	}
	return w.Flush()
}

func printDeadLetters(out io.Writer, ds []control.DeadLetter) error {
	if len(ds) == 0 {
		_, err := fmt.Fprintln(out, "no dead letters")
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SEQ\tDELIVERIES\tSET ASIDE\tLINE")
	for _, d := range ds {
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\n", d.Seq, d.Deliveries, d.At.UTC().Format("2006-01-02 15:04:05"), strconv.QuoteToGraphic(d.Line))
	}
	return w.Flush()
}

// seconds renders a duration in seconds to the second: "1h2m3s".
func seconds(s float64) string {
	return (time.Duration(s) * time.Second).String()
}

func cmdClients(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	cs, err := cl.Clients(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, cs)
	}
	return printClients(c.App.Writer, cs)
}

func cmdWorkers(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	ws, err := cl.Workers(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, ws)
	}
	return printWorkers(c.App.Writer, ws)
}

func cmdIdentity(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	id, err := cl.Identity(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, id)
	}
	_, err = fmt.Fprintf(c.App.Writer, "public key:  %s\nfingerprint: %s\n", id.PublicKey, id.Fingerprint)
	return err
}
