package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chatty-dev/chatty/pkg/control"
)

// topSample is one answer of the control API: the status and the clients,
// or the error that came instead.
type topSample struct {
	at      time.Time
	status  control.Status
	clients []control.Client
	err     error
}

// topEvent is something top noticed between two samples.
type topEvent struct {
	at   time.Time
	text string // made of escaped text only
}

// rateWindow is how far back the sparkline of the feed rate goes.
const rateWindow = time.Minute

// maxEvents is how many events top remembers.
const maxEvents = 100

// topModel is what top shows: the latest sample, the feed rate over the
// last minute and the events derived from successive samples.
type topModel struct {
	socket string
	last   *topSample // the latest good sample; nil before the first
	err    error      // the latest sample's error, if it failed
	errAt  time.Time
	rate   float64 // lines per second between the last two good samples
	rated  bool    // rate is known
	rates  []ratePoint
	events []topEvent
	total  int // events ever recorded, those forgotten included
}

type ratePoint struct {
	at   time.Time
	rate float64
}

// update takes a new sample: it computes the feed rate and records the
// events that the change from the previous sample tells.
func (m *topModel) update(s topSample) {
	if s.err != nil {
		if m.err == nil && m.last != nil {
			m.event(s.at, "control API: "+escapeText(s.err.Error()))
		}
		m.err, m.errAt = s.err, s.at
		return
	}
	if m.err != nil && m.last != nil {
		m.event(s.at, "control API answers again")
	}
	m.err = nil
	prev := m.last
	m.last = &s
	m.rated = false
	if prev == nil {
		return
	}
	if s.status.PID != prev.status.PID || !s.status.StartedAt.Equal(prev.status.StartedAt) {
		m.event(s.at, fmt.Sprintf("chattyd restarted: pid %d, started %s", s.status.PID,
			s.status.StartedAt.Local().Format("15:04:05")))
		m.rates = nil
		return
	}
	if dt := s.at.Sub(prev.at).Seconds(); dt > 0 && s.status.Feed.Lines >= prev.status.Feed.Lines {
		m.rate = float64(s.status.Feed.Lines-prev.status.Feed.Lines) / dt
		m.rated = true
		m.rates = append(m.rates, ratePoint{at: s.at, rate: m.rate})
		for len(m.rates) > 0 && s.at.Sub(m.rates[0].at) > rateWindow {
			m.rates = m.rates[1:]
		}
	}
	m.diff(prev, &s)
}

// event records an event, forgetting the oldest beyond maxEvents.
func (m *topModel) event(at time.Time, text string) {
	m.events = append(m.events, topEvent{at: at, text: text})
	m.total++
	if len(m.events) > maxEvents {
		m.events = slices.Delete(m.events, 0, len(m.events)-maxEvents)
	}
}

// counterEvents are the counters of the status whose going up is an
// event, with what to say about the increase.
var counterEvents = []struct {
	get  func(*control.Status) uint64
	what string // after the increase: "3 " + what
}{
	{func(s *control.Status) uint64 { return s.Clients.Refused }, "connection(s) refused over max_clients"},
	{func(s *control.Status) uint64 { return s.Clients.SlowConsumers }, "slow consumer(s) disconnected"},
	{func(s *control.Status) uint64 { return s.Clients.AcksMismatched }, "mismatched ack(s)"},
	{func(s *control.Status) uint64 { return s.Clients.IdleClosed }, "idle client(s) closed"},
	{func(s *control.Status) uint64 { return s.Clients.TLSFailed }, "TLS handshake(s) failed"},
	{func(s *control.Status) uint64 { return s.Clients.AuthFailed }, "client(s) failed authentication"},
	{func(s *control.Status) uint64 { return s.Clients.UnauthenticatedRefused }, "connection(s) refused with too many authenticating"},
	{func(s *control.Status) uint64 { return s.Clients.RejectedFrames }, "signed frame(s) rejected"},
	{func(s *control.Status) uint64 { return s.Clients.RateLimited }, "client message(s) over their rate"},
	{func(s *control.Status) uint64 { return s.Feed.Dropped }, "feed line(s) dropped as too long"},
}

// namedClients is how many connects or disconnects in one interval are
// listed one by one; more are counted.
const namedClients = 3

// diff records the events between two good samples of the same daemon.
func (m *topModel) diff(prev, cur *topSample) {
	at := cur.at
	p, c := &prev.status, &cur.status
	if p.Feed.State != c.Feed.State {
		m.event(at, fmt.Sprintf("feed %s -> %s", escapeText(p.Feed.State), escapeText(c.Feed.State)))
	}
	if p.Pool.Desired != c.Pool.Desired {
		m.event(at, fmt.Sprintf("pool scaled %d -> %d", p.Pool.Desired, c.Pool.Desired))
	}
	before := make(map[int]control.Worker, len(p.Pool.Slots))
	for _, w := range p.Pool.Slots {
		before[w.Slot] = w
	}
	for _, w := range c.Pool.Slots {
		b, ok := before[w.Slot]
		switch {
		case !ok:
		case w.Restarts > b.Restarts:
			text := fmt.Sprintf("slot %d restarted", w.Slot)
			if n := w.Restarts - b.Restarts; n > 1 {
				text = fmt.Sprintf("slot %d restarted %d times", w.Slot, n)
			}
			if w.LastExit != "" {
				text += " (" + escapeText(w.LastExit) + ")"
			}
			m.event(at, text)
		case w.State != b.State:
			m.event(at, fmt.Sprintf("slot %d %s -> %s", w.Slot, escapeText(b.State), escapeText(w.State)))
		}
	}
	for _, ce := range counterEvents {
		if a, b := ce.get(p), ce.get(c); b > a {
			m.event(at, fmt.Sprintf("%d %s", b-a, ce.what))
		}
	}
	m.clientEvents(prev.clients, cur.clients, at)
}

// clientEvents records the clients that came and went.
func (m *topModel) clientEvents(prev, cur []control.Client, at time.Time) {
	seen := make(map[uint64]bool, len(prev))
	for _, c := range prev {
		seen[c.ID] = true
	}
	var came []control.Client
	for _, c := range cur {
		if !seen[c.ID] {
			came = append(came, c)
		}
		delete(seen, c.ID)
	}
	gone := len(seen)
	if len(came) > namedClients {
		m.event(at, fmt.Sprintf("%d clients connected", len(came)))
	} else {
		for _, c := range came {
			m.event(at, fmt.Sprintf("client %d connected from %s", c.ID, escapeText(c.Remote)))
		}
	}
	if gone > namedClients {
		m.event(at, fmt.Sprintf("%d clients disconnected", gone))
	} else {
		ids := make([]uint64, 0, gone)
		for id := range seen {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			m.event(at, fmt.Sprintf("client %d disconnected", id))
		}
	}
}

// escapeText makes text from the daemon, its feed or its clients safe to
// print on a terminal: control characters, invalid UTF-8 and everything
// beyond ASCII are escaped as Go does in a quoted string, so that nothing
// it holds can move the cursor or change the terminal, and each byte shown
// is one column wide.
func escapeText(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f || s[i] == '\\' {
			q := strconv.QuoteToASCII(s)
			return strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
		}
	}
	return s
}

// sparkBars are the sparkline's levels, lowest first.
var sparkBars = []rune("▁▂▃▄▅▆▇█")

// sparkline draws values as one bar each, scaled to their maximum, keeping
// the last width values.
func sparkline(values []float64, width int) string {
	if width <= 0 {
		return ""
	}
	if len(values) > width {
		values = values[len(values)-width:]
	}
	top := 0.0
	for _, v := range values {
		top = max(top, v)
	}
	var b strings.Builder
	for _, v := range values {
		i := 0
		if top > 0 {
			i = int(math.Round(v / top * float64(len(sparkBars)-1)))
		}
		b.WriteRune(sparkBars[max(0, min(i, len(sparkBars)-1))])
	}
	return b.String()
}

// fit cuts line to at most width columns (every rune of a frame is one
// column: see escapeText).
func fit(line string, width int) string {
	if width <= 0 {
		return ""
	}
	if utf8.RuneCountInString(line) <= width {
		return line
	}
	n := 0
	for i := range line {
		if n == width {
			return line[:i]
		}
		n++
	}
	return line
}

// byteSize renders a number of bytes: "512 B", "1.5 KiB", "3.2 MiB".
func byteSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// frame renders the model as lines of at most width-1 columns (a line
// that reaches the last column would make the terminal wrap or lose its
// last character to the clearing that follows), at most height of them.
func (m *topModel) frame(now time.Time, width, height int) []string {
	width = max(width-1, 1)
	height = max(height, 1)
	var head []string
	add := func(format string, args ...any) { head = append(head, fmt.Sprintf(format, args...)) }

	clock := now.Local().Format("15:04:05")
	if m.last == nil {
		add("chattyctl top  %s  %s", escapeText(m.socket), clock)
		if m.err != nil {
			add("no answer: %s", escapeText(m.err.Error()))
		}
		return fitAll(head, width, height)
	}
	st := m.last.status
	add("chattyd %s  pid %d  up %s  %s  %s", escapeText(st.Version), st.PID, seconds(st.UptimeSeconds),
		escapeText(m.socket), clock)
	if m.err != nil {
		add("NO ANSWER since %s: %s", m.errAt.Local().Format("15:04:05"), escapeText(m.err.Error()))
	}
	f := st.Feed
	rate := "-"
	if m.rated {
		rate = fmt.Sprintf("%.1f/s", m.rate)
	}
	add("feed     %s %s  lines %d  rate %s  bytes %s  dropped %d  undelivered %d",
		escapeText(f.Source), escapeText(f.State), f.Lines, rate, byteSize(f.Bytes), f.Dropped, f.Undelivered)
	values := make([]float64, len(m.rates))
	peak := 0.0
	for i, p := range m.rates {
		values[i] = p.rate
		peak = max(peak, p.rate)
	}
	const sparkLabel = "last 1m  "
	suffix := fmt.Sprintf("  peak %.1f/s", peak)
	add("%s%s%s", sparkLabel, sparkline(values, width-len(sparkLabel)-len(suffix)), suffix)
	cs := st.Clients
	add("clients  %d connected  accepted %d  refused %d  slow %d  idle closed %d  acks %d good %d mismatched",
		cs.Connected, cs.Accepted, cs.Refused, cs.SlowConsumers, cs.IdleClosed, cs.AcksGood, cs.AcksMismatched)
	var extra []string
	for _, x := range []struct {
		n    uint64
		what string
	}{
		{uint64(cs.Authenticating), "authenticating"}, {cs.AuthFailed, "auth failed"},
		{cs.UnauthenticatedRefused, "unauthenticated refused"}, {cs.TLSFailed, "TLS failed"},
		{cs.RejectedFrames, "frames rejected"}, {cs.RateLimited, "rate limited"},
	} {
		if x.n > 0 {
			extra = append(extra, fmt.Sprintf("%s %d", x.what, x.n))
		}
	}
	if len(extra) > 0 {
		add("         %s", strings.Join(extra, "  "))
	}
	for _, l := range listenerRows(st.Listeners, m.last.clients) {
		add("%s", l)
	}
	add("pool     %d of %d running  restarts %d", st.Pool.Running, st.Pool.Desired, st.Pool.Restarts)

	clients := m.clientRows()
	workers := workerRows(st.Pool.Slots)
	events := m.eventRows()
	// Each list takes a blank line and its heading, then its rows; the
	// rows left are shared, a list needing less giving the rest to the
	// others.
	lists := [][]string{clients, workers, events}
	room := height - len(head)
	for _, l := range lists {
		if len(l) > 0 {
			room -= 2
		}
	}
	shown := share(room, len(clients)-1, len(workers)-1, len(events)-1)
	out := head
	for i, l := range lists {
		if len(l) == 0 || len(out)+2 > height {
			continue
		}
		out = append(out, "", l[0])
		rows := l[1:]
		if n := shown[i]; n < len(rows) {
			if n > 0 {
				rows = append(rows[:n-1:n-1], fmt.Sprintf("... %d more", len(rows)-n+1))
			} else {
				rows = nil
			}
		}
		out = append(out, rows...)
	}
	return fitAll(out, width, height)
}

// share divides room rows among lists wanting need rows each: equal
// shares, what a list does not need going to the others.
func share(room int, need ...int) []int {
	got := make([]int, len(need))
	for room > 0 {
		wanting := 0
		for i, n := range need {
			if got[i] < n {
				wanting++
			}
		}
		if wanting == 0 {
			break
		}
		each := max(room/wanting, 1)
		for i, n := range need {
			if room == 0 {
				break
			}
			if got[i] < n {
				d := min(each, n-got[i], room)
				got[i] += d
				room -= d
			}
		}
	}
	return got
}

func fitAll(lines []string, width, height int) []string {
	if len(lines) > height {
		lines = lines[:height]
	}
	for i, l := range lines {
		lines[i] = fit(l, width)
	}
	return lines
}

// clientRows is the clients' table, heading first, the most behind first
// (lines queued, then lines unacknowledged): those are the ones to see
// when the table is cut. Empty without clients.
func (m *topModel) clientRows() []string {
	cs := slices.Clone(m.last.clients)
	if len(cs) == 0 {
		return nil
	}
	slices.SortStableFunc(cs, func(a, b control.Client) int {
		return cmp.Or(cmp.Compare(b.QueueLines, a.QueueLines), cmp.Compare(b.AckLag, a.AckLag), cmp.Compare(a.ID, b.ID))
	})
	rows := []string{fmt.Sprintf("%-6s %-24s %-16s %8s %7s %9s %7s %9s %5s  %s",
		"CLIENT", "REMOTE", "LISTENER", "UP", "QUEUED", "QUEUE", "ACK LAG", "SENT", "BAD", "KEY")}
	now := m.last.at
	for _, c := range cs {
		up := "-"
		if !c.ConnectedAt.IsZero() {
			up = seconds(max(now.Sub(c.ConnectedAt).Seconds(), 0))
		}
		key, listener := c.Key, c.Listener
		if key == "" {
			key = "-"
		}
		if listener == "" {
			listener = "-"
		}
		rows = append(rows, fmt.Sprintf("%-6d %-24s %-16s %8s %7d %9s %7d %9d %5d  %s",
			c.ID, escapeText(c.Remote), escapeText(listener), up, c.QueueLines, byteSize(uint64(max(c.QueueBytes, 0))),
			c.AckLag, c.LinesSent, c.AcksMismatched, escapeText(key)))
	}
	return rows
}

// listenerRows is a line for each listener: its address and its clients,
// with the most any of them has queued and left unacknowledged.
func listenerRows(ls []control.Listener, cs []control.Client) []string {
	rows := make([]string, 0, len(ls))
	for _, l := range ls {
		n, queued, lag := 0, int64(0), int64(0)
		for _, c := range cs {
			if c.Listener == l.Name {
				n++
				queued, lag = max(queued, c.QueueLines), max(lag, c.AckLag)
			}
		}
		rows = append(rows, fmt.Sprintf("listen   %s %s %s  clients %d  most queued %d  most ack lag %d",
			escapeText(l.Name), escapeText(l.Protocol), escapeText(l.Addr), n, queued, lag))
	}
	return rows
}

// workerRows is the pool's table, heading first; empty without slots.
func workerRows(ws []control.Worker) []string {
	if len(ws) == 0 {
		return nil
	}
	rows := []string{fmt.Sprintf("%-5s %-8s %-9s %9s %8s  %s", "SLOT", "PID", "STATE", "UPTIME", "RESTARTS", "LAST EXIT")}
	for _, w := range ws {
		pid, up := "-", "-"
		if w.PID > 0 {
			pid = strconv.Itoa(w.PID)
		}
		if w.UptimeSeconds > 0 {
			up = seconds(w.UptimeSeconds)
		}
		last := w.LastExit
		if last == "" {
			last = "-"
		}
		rows = append(rows, fmt.Sprintf("%-5d %-8s %-9s %9s %8d  %s", w.Slot, pid, escapeText(w.State), up, w.Restarts, escapeText(last)))
	}
	return rows
}

// eventRows is the events, heading first and the newest first; empty
// without events.
func (m *topModel) eventRows() []string {
	if len(m.events) == 0 {
		return nil
	}
	rows := []string{"EVENTS"}
	for _, e := range slices.Backward(m.events) {
		rows = append(rows, e.at.Local().Format("15:04:05")+"  "+e.text)
	}
	return rows
}

// plainLine is top's output when stdout is no terminal: one line for the
// latest sample, as name=value pairs.
func (m *topModel) plainLine(now time.Time) string {
	ts := now.UTC().Format(time.RFC3339)
	if m.err != nil {
		return ts + " error=" + strconv.Quote(m.err.Error())
	}
	if m.last == nil {
		return ts + " error=\"no answer yet\""
	}
	st := m.last.status
	rate := "-"
	if m.rated {
		rate = fmt.Sprintf("%.1f", m.rate)
	}
	lag := int64(0)
	for _, c := range m.last.clients {
		lag = max(lag, c.AckLag)
	}
	return fmt.Sprintf("%s lines=%d rate=%s clients=%d max_ack_lag=%d refused=%d slow=%d mismatched=%d workers=%d/%d restarts=%d feed=%s",
		ts, st.Feed.Lines, rate, st.Clients.Connected, lag, st.Clients.Refused, st.Clients.SlowConsumers,
		st.Clients.AcksMismatched, st.Pool.Running, st.Pool.Desired, st.Pool.Restarts, escapeText(st.Feed.State))
}
