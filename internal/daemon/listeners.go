package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/chatty-dev/chatty/internal/broadcast"
	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/tlsconf"
	"github.com/chatty-dev/chatty/internal/webfeed"
	"github.com/chatty-dev/chatty/internal/workqueue"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/sirupsen/logrus"
)

// listeners owns chattyd's broadcast listeners: the servers behind them,
// their TLS configurations and the signed listener's keyring. The feed and
// chattyctl send reach every client through it, and status, reload and
// the pool learn about listeners from it alone. A new listener is one more
// entry in bind and one more server in servers.
type listeners struct {
	log    *logrus.Entry
	logger *logrus.Logger
	id     *identity.Identity // nil without identity in the configuration

	// entries are the bound listeners in the order they were bound, for
	// status and the start-up log.
	entries []listenerEntry
	// bound are the sockets bound for the entries, closed by closeAll.
	bound []net.Listener
	// servers are the broadcast servers, each once: a server may accept
	// on several entries (the text server also takes the TLS listener).
	servers []*broadcast.Server

	stream string // the stream's identity, the same on every server

	// pubMu serialises publishing, so that every server, and the work
	// queue, number the feed's lines and messages alike, in one order.
	pubMu sync.Mutex

	text      *broadcast.Server // the original protocol; nil when queue serves it
	queue     *workqueue.Queue  // the text listener, and the sequenced one if any, as a work queue (broadcast.delivery: one); else nil
	sequenced *broadcast.Server // nil without broadcast.sequenced, or when the queue serves it
	textTLS   *tlsconf.Server   // nil without broadcast.tls
	signed    *broadcast.Server // nil without broadcast.signed
	signedTLS *tlsconf.Server   // nil without TLS on the signed listener
	keys      *identity.Keyring // client keys of the signed listener; nil without one
	// startSigned is broadcast.signed as the daemon started: its
	// listener's TLS and authentication change only at restart.
	startSigned config.Signed
	selfCert    *tls.Certificate // the identity's certificate, made when first needed

	web    *webfeed.Server   // the WebSocket listener's HTTP side; nil without broadcast.websocket
	webTLS *tlsconf.Server   // nil without TLS on it
	webWS  *broadcast.Server // its WebSocket clients
	// webKeys are the client keys of the WebSocket listener with auth:
	// authorized_keys (the file's only: pool workers never connect
	// there); nil without.
	webKeys *identity.Keyring
	// startWeb is broadcast.websocket as the daemon started.
	startWeb config.WebSocket
}

// listenerEntry is one bound listener as status reports it.
type listenerEntry struct {
	name     string // "broadcast", "broadcast-tls", "broadcast-signed", "broadcast-websocket"
	protocol string // "tcp", "tls", "signed", "signed+tls", "websocket", "websocket+tls"
	addr     net.Addr
	server   *broadcast.Server
}

// bindListeners binds every configured listener, so that a taken address
// fails before anything starts. passed, if not nil, is the text listener's
// socket as systemd passed it. On error nothing stays bound.
func bindListeners(cfg config.Config, passed net.Listener, id *identity.Identity, logger *logrus.Logger) (_ *listeners, err error) {
	l := &listeners{
		log:    logger.WithField(logging.FieldComponent, "daemon"),
		logger: logger,
		id:     id,
		stream: broadcast.NewStreamID(),
	}
	defer func() {
		if err != nil {
			l.closeAll()
		}
	}()

	ln := passed
	if ln == nil {
		if ln, err = broadcast.Listen(cfg.Broadcast.Listen); err != nil {
			return nil, err
		}
	}
	l.bound = append(l.bound, ln)
	if cfg.Broadcast.Delivery == config.DeliveryOne {
		// A work queue is its own data path: each line to one worker.
		l.queue = workqueue.New(ln, queueOptions(cfg), logger.WithField(logging.FieldComponent, "workqueue"))
		l.entries = append(l.entries, listenerEntry{name: control.ListenerBroadcast, protocol: "tcp", addr: ln.Addr()})
	} else {
		l.text = broadcast.New(ln, limitsOf(cfg), logger.WithField(logging.FieldComponent, "broadcast"))
		l.add(control.ListenerBroadcast, "tcp", ln.Addr(), l.text)
	}

	if t := cfg.Broadcast.TLS; t.Listen != "" {
		tln, err := l.bindTextTLS(t)
		if err != nil {
			return nil, err
		}
		l.bound = append(l.bound, tln)
	}
	if sc := cfg.Broadcast.Signed; sc.Listen != "" {
		sln, err := l.bindSigned(cfg, sc)
		if err != nil {
			return nil, err
		}
		l.bound = append(l.bound, sln)
	}
	if wc := cfg.Broadcast.WebSocket; wc.Listen != "" {
		wln, err := l.bindWebSocket(cfg, wc)
		if err != nil {
			return nil, err
		}
		l.bound = append(l.bound, wln)
	}

	if q := cfg.Broadcast.Sequenced.Listen; q != "" {
		qln, err := broadcast.Listen(q)
		if err != nil {
			return nil, fmt.Errorf("broadcast.sequenced.listen: %w", err)
		}
		l.bound = append(l.bound, qln)
		if l.queue != nil {
			// The same queue: a line goes to one worker of either listener.
			l.queue.AddSequenced(qln, l.stream)
			l.entries = append(l.entries, listenerEntry{name: control.ListenerSequenced, protocol: "sequenced", addr: qln.Addr()})
		} else {
			l.sequenced = broadcast.NewSequenced(qln, limitsOf(cfg), logger.WithField(logging.FieldComponent, "broadcast-sequenced"))
			l.add(control.ListenerSequenced, "sequenced", qln.Addr(), l.sequenced)
		}
	}

	// One numbering for the clients of every listener, so that chattyctl
	// clients never shows an id twice; one stream, whose sequence numbers
	// every listener shares.
	ids := new(broadcast.ClientIDs)
	if l.queue != nil {
		l.queue.SetClientIDs(ids)
	}
	for _, s := range l.servers {
		s.SetClientIDs(ids)
		s.SetStream(l.stream)
		s.SetRetention(retentionOf(cfg))
	}
	return l, nil
}

// add records a bound listener, and its server the first time it is seen.
func (l *listeners) add(name, protocol string, addr net.Addr, s *broadcast.Server) {
	l.entries = append(l.entries, listenerEntry{name: name, protocol: protocol, addr: addr, server: s})
	for _, known := range l.servers {
		if known == s {
			return
		}
	}
	l.servers = append(l.servers, s)
}

// bindTextTLS adds the TLS listener to the text server: its clients share
// the text feed.
func (l *listeners) bindTextTLS(t config.TLS) (net.Listener, error) {
	if l.text == nil {
		return nil, errors.New("broadcast.tls.listen: the work queue (broadcast.delivery: one) serves the plain TCP listener only; remove broadcast.tls or set broadcast.delivery: all")
	}
	files, err := l.tlsFiles(t.TLSFiles)
	if err != nil {
		return nil, err
	}
	tc, err := tlsconf.NewServer(files)
	if err != nil {
		return nil, err
	}
	tln, err := broadcast.Listen(t.Listen)
	if err != nil {
		return nil, fmt.Errorf("TLS listener: %w", err)
	}
	l.textTLS = tc
	l.text.AddListener(tls.NewListener(tln, tc.Config()))
	l.add(control.ListenerTLS, "tls", tln.Addr(), l.text)
	return tln, nil
}

// bindSigned binds the signed listener, whose clients get the feed as
// frames signed with the daemon's identity.
func (l *listeners) bindSigned(cfg config.Config, sc config.Signed) (net.Listener, error) {
	if l.id == nil {
		return nil, errors.New("broadcast.signed.listen needs an identity; set identity.key_file or identity.generate: true")
	}
	var file *identity.AuthorizedKeys
	if path := cfg.Identity.AuthorizedKeys; path != "" {
		var err error
		if file, err = identity.LoadAuthorizedKeys(path); err != nil {
			return nil, fmt.Errorf("identity.authorized_keys: %w", err)
		}
		l.log.WithField("file", path).Infof("%d client keys authorized", file.Len())
	}
	if cfg.Pool.Worker.Protocol == config.ProtocolSigned {
		// Workers are given the public key file: it must be the key's.
		pubFile := identity.PublicPath(l.id.Path)
		pub, err := identity.LoadPublicKey(pubFile)
		if err == nil && !pub.Equal(l.id.Public) {
			err = fmt.Errorf("%s is not the public key of %s; move it away and write it again with the key's public half", pubFile, l.id.Path)
		}
		if err != nil {
			return nil, fmt.Errorf("signed workers (pool.worker.protocol: signed) verify with the public key file: %w", err)
		}
	}
	var tc *tlsconf.Server
	if sc.TLS.Enabled {
		files, err := l.tlsFiles(sc.TLS.TLSFiles)
		if err != nil {
			return nil, fmt.Errorf("broadcast.signed.tls: %w", err)
		}
		if tc, err = tlsconf.NewServer(files); err != nil {
			return nil, fmt.Errorf("broadcast.signed.tls: %w", err)
		}
	}
	raw, err := broadcast.Listen(sc.Listen)
	if err != nil {
		return nil, fmt.Errorf("signed listener: %w", err)
	}
	ln, protocol := raw, "signed"
	if tc != nil {
		ln, protocol = tls.NewListener(raw, tc.Config()), "signed+tls"
	}
	keys := identity.NewKeyring(file)
	so := broadcast.SignedOptions{
		Key:                l.id.Private,
		Mode:               sc.Mode.Mode(),
		CheckpointEvery:    sc.CheckpointEvery,
		CheckpointInterval: sc.CheckpointInterval,
		TimestampWindow:    sc.TimestampWindow,
		FeedType:           sc.FeedType.Type(),
		Keys:               keys,
		Authenticate:       sc.Auth == config.AuthAuthorizedKeys,
		UpstreamRate:       sc.UpstreamRate,
		UpstreamBurst:      sc.UpstreamBurst,
	}
	srv, err := broadcast.NewSigned(ln, limitsOf(cfg), so,
		l.logger.WithField(logging.FieldComponent, "broadcast").WithField(logging.FieldScope, "signed"))
	if err != nil {
		raw.Close()
		return nil, err
	}
	l.signed, l.signedTLS, l.keys, l.startSigned = srv, tc, keys, sc
	l.add(control.ListenerSigned, protocol, raw.Addr(), srv)
	return raw, nil
}

// bindWebSocket binds the WebSocket listener: its HTTP server serves the
// page and the status, and hands the connections it upgrades to a
// broadcast server of WebSocket clients.
func (l *listeners) bindWebSocket(cfg config.Config, wc config.WebSocket) (net.Listener, error) {
	o := webfeed.Options{AllowedOrigins: wc.AllowedOrigins}
	if wc.TokenFile != "" {
		tok, err := webfeed.LoadToken(wc.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("broadcast.websocket.token_file: %w", err)
		}
		o.Token = tok
	}
	protocol := "websocket"
	if wc.TLS.Enabled {
		files, err := l.tlsFiles(wc.TLS.TLSFiles)
		if err != nil {
			return nil, fmt.Errorf("broadcast.websocket.tls: %w", err)
		}
		if l.webTLS, err = tlsconf.NewServer(files); err != nil {
			return nil, fmt.Errorf("broadcast.websocket.tls: %w", err)
		}
		o.TLS, protocol = l.webTLS.Config(), "websocket+tls"
	}
	raw, err := broadcast.Listen(wc.Listen)
	if err != nil {
		return nil, fmt.Errorf("WebSocket listener: %w", err)
	}
	log := l.logger.WithField(logging.FieldComponent, "broadcast").WithField(logging.FieldScope, "websocket")
	l.web = webfeed.New(raw, o, log)
	l.webWS = broadcast.NewWebSocket(l.web.Feed(), webLimitsOf(cfg), broadcast.WebSocketOptions{PingInterval: wc.PingInterval, Start: l.web.Start}, log)
	l.web.SetNext(l.webWS.NextSeq)
	if wc.Auth == config.AuthAuthorizedKeys {
		if err := l.webAuth(cfg); err != nil {
			raw.Close()
			return nil, err
		}
	}
	l.startWeb = wc
	l.add(control.ListenerWebSocket, protocol, raw.Addr(), l.webWS)
	return raw, nil
}

// webAuth makes the WebSocket listener's clients authenticate with a key
// of identity.authorized_keys, answering a challenge signed with the
// identity.
func (l *listeners) webAuth(cfg config.Config) error {
	if l.id == nil {
		return errors.New("broadcast.websocket.auth: authorized_keys needs an identity; set identity.key_file or identity.generate: true")
	}
	path := cfg.Identity.AuthorizedKeys
	if path == "" {
		return errors.New("broadcast.websocket.auth: authorized_keys needs identity.authorized_keys")
	}
	file, err := identity.LoadAuthorizedKeys(path)
	if err != nil {
		return fmt.Errorf("identity.authorized_keys: %w", err)
	}
	l.webKeys = identity.NewKeyring(file)
	return l.webWS.SetWebSocketAuth(broadcast.WebSocketAuth{Key: l.id.Private, Keys: l.webKeys,
		TimestampWindow: cfg.Broadcast.Signed.TimestampWindow})
}

// setStatus gives the WebSocket listener's GET /v1/status the daemon's
// status.
func (l *listeners) setStatus(f func() control.Status) {
	if l.web != nil {
		l.web.SetStatus(f)
	}
}

// selfSigned returns the certificate derived from the identity, made once
// per run (tls.self_signed).
func (l *listeners) selfSigned() (*tls.Certificate, error) {
	if l.selfCert != nil {
		return l.selfCert, nil
	}
	if l.id == nil {
		return nil, errors.New("tls.self_signed needs an identity; set identity.key_file or identity.generate: true")
	}
	cert, err := tlsconf.SelfSigned(l.id.Private, time.Now())
	if err != nil {
		return nil, err
	}
	l.selfCert = &cert
	return l.selfCert, nil
}

// tlsFiles returns where a listener's TLS configuration comes from.
func (l *listeners) tlsFiles(c config.TLSFiles) (tlsconf.ServerFiles, error) {
	f := tlsconf.ServerFiles{CertFile: c.CertFile, KeyFile: c.KeyFile, ClientCAFile: c.ClientCAFile}
	if c.SelfSigned {
		cert, err := l.selfSigned()
		if err != nil {
			return f, err
		}
		f.Certificate = cert
	}
	return f, nil
}

// logBound logs where each listener is, once the daemon runs.
func (l *listeners) logBound() {
	for _, e := range l.entries {
		switch e.name {
		case control.ListenerBroadcast:
			l.log.Infof("The TCP server is listening on %s", e.addr)
		case control.ListenerTLS:
			l.log.Infof("The TLS listener is on %s", e.addr)
		case control.ListenerSigned:
			l.log.Infof("The signed listener is on %s", e.addr)
		case control.ListenerWebSocket:
			scheme := "http"
			if l.webTLS != nil {
				scheme = "https"
			}
			l.log.Infof("The WebSocket listener and the web page are on %s://%s/", scheme, e.addr)
		default:
			l.log.Infof("The %s listener is on %s", e.name, e.addr)
		}
	}
}

// memberName names a server's member of the run group.
func (l *listeners) memberName(s *broadcast.Server) string {
	for _, e := range l.entries {
		if e.server == s {
			return e.name
		}
	}
	return control.ListenerBroadcast
}

// webMember names the member of the WebSocket listener's HTTP server.
const webMember = control.ListenerWebSocket + "-http"

// run adds one member per server to the group, the work queue's, and one
// for the WebSocket listener's HTTP server.
func (l *listeners) run(ctx context.Context, g *group) {
	for _, s := range l.servers {
		g.add(l.memberName(s), func() error { return s.Run(ctx) })
	}
	if l.queue != nil {
		g.add(control.ListenerBroadcast, func() error { return l.queue.Run(ctx) })
	}
	if l.web != nil {
		g.add(webMember, func() error { return l.web.Run(ctx) })
	}
}

// wait waits for every server's member of the group.
func (l *listeners) wait(g *group) {
	if l.web != nil {
		g.wait(webMember)
	}
	for _, s := range l.servers {
		g.wait(l.memberName(s))
	}
	if l.queue != nil {
		g.wait(control.ListenerBroadcast)
	}
}

// publish sends lines to the clients of every listener and returns the
// text listener's sequence number of the last one. With a work queue it
// waits while the queue is full, so that the feed is held back: then
// the lines go out as the queue takes them, and the wait holds no lock,
// so that chattyctl send is answered meanwhile.
func (l *listeners) publish(lines [][]byte) uint64 {
	if l.queue == nil {
		l.pubMu.Lock()
		defer l.pubMu.Unlock()
		var seq uint64
		for _, s := range l.servers {
			if n := s.Publish(lines); s == l.text {
				seq = n
			}
		}
		return seq
	}
	var seq uint64
	for len(lines) > 0 {
		l.queue.WaitRoom(lines[0])
		l.pubMu.Lock()
		n, last := l.queue.PublishFit(lines)
		if n > 0 {
			for _, s := range l.servers {
				s.Publish(lines[:n])
			}
			seq = last
		}
		l.pubMu.Unlock()
		lines = lines[n:]
	}
	return seq
}

// publishMessage sends a typed message to the clients of every listener,
// each in its protocol, and returns the text listener's sequence number.
// A work queue takes the text line as one more line to hand out; when it
// is full, nothing is sent anywhere and the error says so.
func (l *listeners) publishMessage(m message.Message) (uint64, error) {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	var seq uint64
	if l.queue != nil {
		var err error
		if seq, err = l.queue.TryPublish([]byte(m.String())); err != nil {
			return 0, err
		}
	}
	for _, s := range l.servers {
		if n := s.PublishMessage(m); s == l.text {
			seq = n
		}
	}
	return seq, nil
}

// setLimits applies the configuration's client limits to every server,
// and its work-queue settings to the queue.
func (l *listeners) setLimits(cfg config.Config) {
	for _, s := range l.servers {
		if s == l.webWS {
			s.SetLimits(webLimitsOf(cfg))
		} else {
			s.SetLimits(limitsOf(cfg))
		}
		s.SetRetention(retentionOf(cfg))
	}
	if l.queue != nil {
		l.queue.SetOptions(queueOptions(cfg))
	}
}

// textAddr is the text listener's address, where text workers connect.
func (l *listeners) textAddr() net.Addr {
	if l.queue != nil {
		return l.queue.Addr()
	}
	return l.text.Addr()
}

// retentionOf is the configuration's retention, for every server.
func retentionOf(cfg config.Config) broadcast.Retention {
	r := cfg.Broadcast.Retain
	return broadcast.Retention{Bytes: r.Bytes, Lines: r.Lines, Age: r.Age}
}

// retained reports the stream and what of it every listener can still
// send: from the latest first line of any server.
func (l *listeners) retained() control.StreamStatus {
	out := control.StreamStatus{ID: l.stream}
	if len(l.servers) == 0 {
		// Only a work queue, which retains nothing once acknowledged.
		last := l.queue.LastSeq()
		return control.StreamStatus{ID: l.stream, First: last + 1, Last: last}
	}
	for i, s := range l.servers {
		r := s.Retained()
		if i == 0 || r.First > out.First {
			out.First = r.First
		}
		out.Last = r.Last
		out.Bytes += r.Bytes
	}
	if out.First <= out.Last {
		out.Lines = int64(out.Last - out.First + 1)
	}
	return out
}

// stats adds up every server's counters. A line is undelivered only when
// no client of any listener got it.
func (l *listeners) stats() broadcast.Stats {
	var sum broadcast.Stats
	for i, s := range l.servers {
		st := s.Stats()
		if i == 0 {
			sum = st
			continue
		}
		undelivered := min(sum.Undelivered, st.Undelivered)
		lines, bytes := sum.Lines, sum.Bytes
		sum.Add(st)
		sum.Undelivered, sum.Lines, sum.Bytes = undelivered, lines, bytes
	}
	return sum
}

// status describes every bound listener, with its clients.
func (l *listeners) status() []control.Listener {
	counts := make(map[net.Addr]int)
	for _, s := range l.servers {
		for addr, n := range s.ClientsByListener() {
			counts[addr] += n
		}
	}
	var queued map[string]int // the queue's workers, by listener name
	if l.queue != nil {
		queued = make(map[string]int)
		for _, w := range l.queue.Workers() {
			queued[queueListenerName(w.Listener)]++
		}
	}
	out := make([]control.Listener, len(l.entries))
	for i, e := range l.entries {
		n := counts[e.addr]
		if e.server == nil {
			n = queued[e.name]
		}
		out[i] = control.Listener{Name: e.name, Addr: e.addr.String(), Protocol: e.protocol, Clients: n}
	}
	return out
}

// queueListenerName is the name of the listener a work-queue worker
// connected to.
func queueListenerName(l workqueue.Listener) string {
	if l == workqueue.Sequenced {
		return control.ListenerSequenced
	}
	return control.ListenerBroadcast
}

// clients lists the clients of every listener.
func (l *listeners) clients() []broadcast.ClientInfo {
	var out []broadcast.ClientInfo
	for _, s := range l.servers {
		out = append(out, s.Clients()...)
	}
	return out
}

// nameOf returns the name of the listener that accepted c, or "" if none
// of the entries did.
func (l *listeners) nameOf(c broadcast.ClientInfo) string {
	if c.Listener == nil {
		return ""
	}
	// The address a listener's Accept reports is the one bound: the
	// same value, so no string need be made for each client.
	for _, e := range l.entries {
		if e.addr == c.Listener {
			return e.name
		}
	}
	for _, e := range l.entries {
		if e.addr.String() == c.Listener.String() {
			return e.name
		}
	}
	return ""
}

// reload applies what a new configuration changes live: limits, TLS
// files and authorized keys. What fails to apply keeps the previous
// setting and is logged.
func (l *listeners) reload(next config.Config) {
	l.setLimits(next)
	if l.textTLS != nil && next.Broadcast.TLS.Listen != "" {
		files, err := l.tlsFiles(next.Broadcast.TLS.TLSFiles)
		if err == nil {
			err = l.textTLS.Reload(files)
		}
		if err != nil {
			l.log.WithError(err).Error("Reload: TLS files not applied; the previous ones stay")
		}
	}
	if l.signedTLS != nil && next.Broadcast.Signed.TLS.Enabled {
		// Where the certificate comes from (files or the identity) is
		// set at start, as built-in workers pin what the daemon started
		// with; a reload reads the files again.
		st := next.Broadcast.Signed.TLS
		if st.SelfSigned = l.startSigned.TLS.SelfSigned; st.SelfSigned {
			st = l.startSigned.TLS
		}
		files, err := l.tlsFiles(st.TLSFiles)
		if err == nil {
			err = l.signedTLS.Reload(files)
		}
		if err != nil {
			l.log.WithError(err).Error("Reload: the signed listener's TLS files not applied; the previous ones stay")
		}
	}
	if l.webTLS != nil && next.Broadcast.WebSocket.TLS.Enabled {
		st := next.Broadcast.WebSocket.TLS
		if st.SelfSigned = l.startWeb.TLS.SelfSigned; st.SelfSigned {
			st = l.startWeb.TLS
		}
		files, err := l.tlsFiles(st.TLSFiles)
		if err == nil {
			err = l.webTLS.Reload(files)
		}
		if err != nil {
			l.log.WithError(err).Error("Reload: the WebSocket listener's TLS files not applied; the previous ones stay")
		}
	}
	l.reloadAuthorizedKeys(next.Identity.AuthorizedKeys)
}

// reloadAuthorizedKeys reads the authorized-keys file again: new
// connections and client messages are checked against the new keys. A
// file that does not parse changes nothing.
func (l *listeners) reloadAuthorizedKeys(path string) {
	if l.keys == nil && l.webKeys == nil {
		return
	}
	var file *identity.AuthorizedKeys
	if path == "" {
		if l.keys != nil && l.keys.File() != nil {
			l.log.Info("Reload: no authorized-keys file any more; only pool workers' keys are accepted")
		}
		if l.webKeys != nil && l.webKeys.File() != nil {
			l.log.Warn("Reload: no authorized-keys file any more; no WebSocket client can authenticate")
		}
	} else {
		var err error
		if file, err = identity.LoadAuthorizedKeys(path); err != nil {
			l.log.WithError(err).Error("Reload: authorized keys not applied; the previous ones stay")
			return
		}
		l.log.WithField("file", path).Infof("Reload: %d client keys authorized", file.Len())
	}
	n := 0
	if l.keys != nil {
		l.keys.SetFile(file)
		n += l.signed.DropRevoked()
	}
	if l.webKeys != nil {
		l.webKeys.SetFile(file)
		n += l.webWS.DropRevoked()
	}
	if n > 0 {
		l.log.Warnf("Reload: %d clients whose key is no longer authorized were disconnected", n)
	}
}

// workerTarget says where pool workers of the given protocol connect and,
// for signed workers, what the built-in worker needs. Signed workers need
// the signed listener, which only a restart adds; without it they use the
// text listener.
func (l *listeners) workerTarget(protocol config.Protocol) (net.Addr, *SignedWorker) {
	if protocol != config.ProtocolSigned || l.signed == nil {
		return l.textAddr(), nil
	}
	// The listener's TLS and authentication are as the daemon started,
	// whatever the file says now.
	sc := l.startSigned
	return l.signed.Addr(), &SignedWorker{
		PubKeyFile:   identity.PublicPath(l.id.Path),
		TLS:          sc.TLS.Enabled && sc.TLS.SelfSigned,
		Authenticate: sc.Auth == config.AuthAuthorizedKeys,
	}
}

// workerKey issues a key for one start of a signed pool worker: the
// worker reads it from the pool's credentials pipe, and it is accepted
// until the process is reaped. The daemon's own key never leaves it.
func (l *listeners) workerKey(int) ([]byte, func(), error) {
	priv, revoke, err := l.keys.Issue()
	if err != nil {
		return nil, nil, err
	}
	pem, err := identity.MarshalPrivatePEM(priv)
	if err != nil {
		revoke()
		return nil, nil, err
	}
	return pem, revoke, nil
}

// closeAll closes every bound socket, for New's error paths: servers
// that never ran close nothing themselves.
func (l *listeners) closeAll() {
	for _, ln := range l.bound {
		ln.Close()
	}
}

// queueOptions derives the work queue's settings from a configuration.
func queueOptions(cfg config.Config) workqueue.Options {
	b := cfg.Broadcast
	return workqueue.Options{
		MaxInFlight:    b.WorkQueue.MaxInFlight,
		AckTimeout:     b.WorkQueue.AckTimeout,
		MaxDeliveries:  b.WorkQueue.MaxDeliveries,
		MaxDeadLetters: b.WorkQueue.DeadLetters,
		QueueLines:     b.QueueLines,
		QueueBytes:     b.QueueBytes,
		MaxClients:     b.MaxClients,
		MaxClientLine:  b.MaxClientLine,
		TCPKeepAlive:   net.KeepAliveConfig{Idle: b.TCPKeepAlive.Idle, Interval: b.TCPKeepAlive.Interval, Count: b.TCPKeepAlive.Count},
	}
}

// webLimitsOf derives the WebSocket listener's client limits from a
// configuration.
func webLimitsOf(cfg config.Config) broadcast.Limits {
	lim := limitsOf(cfg)
	lim.MaxUnauthenticated = cfg.Broadcast.WebSocket.MaxUnauthenticated
	return lim
}

// limitsOf derives the servers' client limits from a configuration.
func limitsOf(cfg config.Config) broadcast.Limits {
	b := cfg.Broadcast
	return broadcast.Limits{
		MaxClients:         b.MaxClients,
		MaxUnauthenticated: b.Signed.MaxUnauthenticated, // the signed listener's; webLimitsOf sets the WebSocket listener's
		IdleTimeout:        b.IdleTimeout,
		TCPKeepAlive: broadcast.TCPKeepAlive{
			Idle:     b.TCPKeepAlive.Idle,
			Interval: b.TCPKeepAlive.Interval,
			Count:    b.TCPKeepAlive.Count,
		},
		MaxClientLine:   b.MaxClientLine,
		MaxUnknownLines: b.MaxUnknownLines,
		QueueBytes:      b.QueueBytes,
		QueueLines:      b.QueueLines,
		DrainTimeout:    b.DrainTimeout,
	}
}
