// Package webfeed is the HTTP side of chattyd's WebSocket listener: it
// serves the web page (GET /), the daemon's status as JSON (GET
// /v1/status) and upgrades GET /v1/feed to a WebSocket, whose connection
// it hands, handshake done, to a broadcast server of WebSocket clients
// (broadcast.NewWebSocket) through Feed. It enforces the allowed origins
// and the bearer token; nothing it serves changes the daemon.
package webfeed

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"
)

// The paths served.
const (
	PathPage   = "/"
	PathFeed   = "/v1/feed"
	PathStatus = "/v1/status"
)

// Options configure a Server.
type Options struct {
	// AllowedOrigins are the origins ("https://example.com") whose pages
	// may use the feed and the status besides the server's own; "*"
	// allows any. A request without an Origin header is not a browser
	// page's and is allowed.
	AllowedOrigins []string
	// Token, when not empty, is the bearer token /v1/feed and /v1/status
	// require.
	Token string
	// TLS, when not nil, serves HTTPS on the listener.
	TLS *tls.Config
}

// Server serves the page, the status and the feed's handshake.
type Server struct {
	ln     net.Listener // the TCP listener; wrapped with TLS by Run if configured
	opts   Options
	log    *logrus.Entry
	feed   *connListener
	http   *http.Server
	origin map[string]bool // AllowedOrigins, lower case
	anyOK  bool            // "*" is among them
	token  [sha256.Size]byte
	up     websocket.Upgrader

	// status is set before Run, read-only after.
	status func() control.Status
	// starts holds where each upgraded connection asked to start until
	// the broadcast server admits it (Start).
	starts sync.Map // net.Conn -> start
	// next, set before Run, returns the sequence number of the feed's
	// next line (SetNext).
	next func() uint64
}

// testHookUpgraded, when set, runs after a connection is upgraded and
// before it is handed to the broadcast server (a variable for tests).
var testHookUpgraded atomic.Pointer[func()]

// New returns a server that will serve on ln.
func New(ln net.Listener, o Options, logger *logrus.Entry) *Server {
	s := &Server{
		ln:     ln,
		opts:   o,
		log:    logger,
		feed:   &connListener{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})},
		origin: make(map[string]bool),
		token:  sha256.Sum256([]byte(o.Token)),
	}
	for _, a := range o.AllowedOrigins {
		if a == "*" {
			s.anyOK = true
		}
		s.origin[strings.ToLower(strings.TrimSuffix(a, "/"))] = true
	}
	s.up = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      func(*http.Request) bool { return true }, // checked before, with a clearer answer
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			httpError(w, status, reason.Error())
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathPage+"{$}", s.servePage)
	mux.HandleFunc("GET "+PathFeed, s.serveFeed)
	mux.HandleFunc("GET "+PathStatus, s.serveStatus)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(debugWriter{logger}, "", 0), // failed TLS handshakes, bad requests
		// No HTTP/2: a WebSocket is an HTTP/1.1 upgrade.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	return s
}

// SetStatus sets where GET /v1/status gets the daemon's status. It must
// be called before Run; without it the path answers 404.
func (s *Server) SetStatus(f func() control.Status) { s.status = f }

// SetNext sets where a client that asks for ?from=next starts: next
// returns the sequence number of the feed's next line (the broadcast
// server's NextSeq), read when the request arrives, before the upgrade,
// so that a line published while the connection is being upgraded and
// admitted is sent too. It must be called before Run; without it such a
// client starts when the broadcast server admits it.
func (s *Server) SetNext(next func() uint64) { s.next = next }

// Feed returns the listener of the upgraded connections, for the
// broadcast server. Its address is the server's.
func (s *Server) Feed() net.Listener { return s.feed }

// Addr returns the address served.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// start is where a client asked to start: ?from=...&stream=...
type start struct{ from, stream string }

// Start returns, once, the from and stream parameters with which conn,
// an upgraded connection of Feed, asked for the feed ("" when none), for
// broadcast.WebSocketOptions.Start.
func (s *Server) Start(conn net.Conn) (from, stream string) {
	v, ok := s.starts.LoadAndDelete(conn)
	if !ok {
		return "", ""
	}
	st := v.(start)
	return st.from, st.stream
}

// Run serves until ctx is done, then stops accepting and closes Feed; it
// returns nil then, or the error that stopped serving.
func (s *Server) Run(ctx context.Context) error {
	ln := s.ln
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	done := make(chan error, 1)
	go func() { done <- s.http.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-done:
	}
	// Requests in progress (status, handshakes) end within a second;
	// upgraded connections belong to the broadcast server.
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if e := s.http.Shutdown(sctx); e != nil {
		s.http.Close()
	}
	s.feed.Close()
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		err = <-done
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Handler returns the server's handler, for tests.
func (s *Server) Handler() http.Handler { return s.http.Handler }

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.Write(pageHTML)
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	if s.status == nil {
		httpError(w, http.StatusNotFound, "no status here")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(s.status())
}

func (s *Server) serveFeed(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	q := r.URL.Query()
	st := start{from: q.Get("from"), stream: q.Get("stream")}
	if st.from != "" && st.from != "first" && st.from != "next" && !isSeq(st.from) {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("from=%q: give a sequence number (from 1), \"first\" or \"next\"", st.from))
		return
	}
	if len(st.stream) > 64 {
		httpError(w, http.StatusBadRequest, "stream: longer than 64 characters")
		return
	}
	if st.from == "next" && s.next != nil {
		// From the request's moment, not the admission's: the client
		// is then sent every line published after it asked.
		st = start{from: strconv.FormatUint(s.next(), 10)}
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	conn := ws.NetConn()
	conn.SetDeadline(time.Time{}) // the HTTP server's and the handshake's
	if h := testHookUpgraded.Load(); h != nil {
		(*h)()
	}
	if st.from != "" {
		s.starts.Store(conn, st)
	}
	if !s.feed.hand(conn) {
		s.starts.Delete(conn)
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.Write(closeFrame(1001, "server shutting down"))
		conn.Close()
	}
}

// allowed reports whether the request may use the feed or the status: its
// origin is allowed and it carries the token, if one is required. When
// not, it has answered.
func (s *Server) allowed(w http.ResponseWriter, r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && !s.originOK(o, r) {
		httpError(w, http.StatusForbidden, fmt.Sprintf("origin %s may not use this feed; add it to broadcast.websocket.allowed_origins", o))
		return false
	}
	if s.opts.Token == "" {
		return true
	}
	given := r.URL.Query().Get("access_token")
	if a := r.Header.Get("Authorization"); a != "" {
		scheme, tok, _ := strings.Cut(a, " ")
		if strings.EqualFold(scheme, "Bearer") {
			given = strings.TrimSpace(tok)
		}
	}
	sum := sha256.Sum256([]byte(given))
	if given == "" || subtle.ConstantTimeCompare(sum[:], s.token[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chattyd"`)
		httpError(w, http.StatusUnauthorized, "a valid bearer token is required (Authorization: Bearer TOKEN, or ?access_token=TOKEN)")
		return false
	}
	return true
}

// originOK reports whether a browser page of origin o may use the server:
// it is the server's own (the same host and port as the request's) or an
// allowed one.
func (s *Server) originOK(o string, r *http.Request) bool {
	if s.anyOK || s.origin[strings.ToLower(o)] {
		return true
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(u.Scheme, scheme) && strings.EqualFold(u.Host, r.Host)
}

// isSeq reports whether s is a sequence number: digits, not 0.
func isSeq(s string) bool {
	n, err := strconv.ParseUint(s, 10, 64)
	return err == nil && n > 0
}

// httpError answers with status and {"error": msg}, as the control API.
func httpError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

// closeFrame is a server's close frame with code and reason.
func closeFrame(code int, reason string) []byte {
	return append([]byte{0x88, byte(2 + len(reason)), byte(code >> 8), byte(code)}, reason...)
}

// debugWriter logs what the HTTP server reports at debug level: a
// stranger's failed handshake is no operator's concern.
type debugWriter struct{ log *logrus.Entry }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

// connListener is the net.Listener of the upgraded connections.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// hand gives conn to the broadcast server; it reports false once the
// listener is closed.
func (l *connListener) hand(conn net.Conn) bool {
	select {
	case l.conns <- conn:
		return true
	case <-l.done:
		return false
	}
}

// ErrInsecureToken is returned by LoadToken for a token file that others
// may read.
var ErrInsecureToken = errors.New("token file readable by others")

// LoadToken reads the bearer token from path: its one line, of a regular
// file no one but its owner may read or write.
func LoadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("open token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrInsecureToken, path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4<<10))
	if err != nil {
		return "", fmt.Errorf("read token file %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return "", fmt.Errorf("token file %s is empty; write one line of at least 16 characters into it", path)
	case strings.ContainsAny(tok, " \t\r\n"):
		return "", fmt.Errorf("token file %s holds more than one word; write the token alone on one line", path)
	case len(tok) < 16:
		return "", fmt.Errorf("token in %s is %d characters long; use at least 16 (such as: openssl rand -hex 16)", path, len(tok))
	}
	return tok, nil
}
