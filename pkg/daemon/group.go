package daemon

// member is one finished part of the run group.
type member struct {
	name string
	err  error
}

// group runs the daemon's parts, each in a goroutine it owns, and lets Run
// wait for them one by one in shutdown order.
type group struct {
	done    chan member
	running map[string]bool
	ended   []member
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
	delete(g.running, m.name)
	g.ended = append(g.ended, m)
}

// wait blocks until the named member has ended; members that end
// meanwhile are recorded.
func (g *group) wait(name string) {
	for g.running[name] {
		g.record(<-g.done)
	}
}

// waitAll blocks until every member has ended.
func (g *group) waitAll() {
	for len(g.running) > 0 {
		g.record(<-g.done)
	}
}
