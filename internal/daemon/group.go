package daemon

import "github.com/sirupsen/logrus"

// member is one finished part of the run group.
type member struct {
	name string
	err  error
}

// group runs the daemon's parts, each in a goroutine it owns, and lets Run
// wait for them one by one in shutdown order. Closing abort ends every
// wait at once: the graceful stop is abandoned, and the members still
// running are left to the process's exit.
type group struct {
	abort   <-chan struct{}
	log     *logrus.Entry // logs each member's end at debug level
	done    chan member
	running map[string]bool
	stopped bool // abort was seen
}

func (g *group) add(name string, fn func() error) {
	if g.done == nil {
		g.done = make(chan member, 16)
		g.running = make(map[string]bool)
	}
	g.running[name] = true
	go func() { g.done <- member{name: name, err: fn()} }()
}

// record notes a member's end seen by the caller.
func (g *group) record(m member) {
	if g.log != nil {
		g.log.WithField("member", m.name).Debug("Part stopped")
	}
	delete(g.running, m.name)
}

// next records the next member to end, and reports false when abort
// came first.
func (g *group) next() bool {
	if g.stopped {
		return false
	}
	select {
	case m := <-g.done:
		g.record(m)
		return true
	case <-g.abort:
		g.stopped = true
		return false
	}
}

// wait blocks until the named member has ended; members that end
// meanwhile are recorded.
func (g *group) wait(name string) {
	for g.running[name] && g.next() {
	}
}

// waitAll blocks until every member has ended.
func (g *group) waitAll() {
	for len(g.running) > 0 && g.next() {
	}
}

// aborted reports whether abort ended the waiting.
func (g *group) aborted() bool { return g.stopped }
