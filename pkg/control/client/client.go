// Package client calls chattyd's control API over its Unix socket. It is
// the one client of the API, used by chattyctl and by tests; see package
// control for the server and the request and response types.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/chatty-dev/chatty/pkg/control"
)

// Client calls the control API of the daemon at one socket path. It opens
// a new connection for every call, so that it is never left holding one to
// a daemon that has gone. It is safe for concurrent use.
type Client struct {
	path string
	hc   *http.Client
}

// New returns a client of the daemon listening at socketPath.
func New(socketPath string) *Client {
	c := &Client{path: socketPath}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", socketPath)
			if err != nil {
				return nil, newConnError(socketPath, err)
			}
			return conn, nil
		},
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	c.hc = &http.Client{Transport: tr}
	return c
}

// Path returns the socket path the client calls.
func (c *Client) Path() string { return c.path }

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (control.Status, error) {
	var st control.Status
	err := c.do(ctx, http.MethodGet, control.PathStatus, nil, &st)
	return st, err
}

// Clients returns the broadcaster's connected clients.
func (c *Client) Clients(ctx context.Context) ([]control.Client, error) {
	var cs []control.Client
	err := c.do(ctx, http.MethodGet, control.PathClients, nil, &cs)
	return cs, err
}

// Workers returns the pool's slots.
func (c *Client) Workers(ctx context.Context) ([]control.Worker, error) {
	var ws []control.Worker
	err := c.do(ctx, http.MethodGet, control.PathWorkers, nil, &ws)
	return ws, err
}

// Identity returns the daemon's public identity. A daemon without one
// answers an *APIError with status 404.
func (c *Client) Identity(ctx context.Context) (control.Identity, error) {
	var id control.Identity
	err := c.do(ctx, http.MethodGet, control.PathIdent, nil, &id)
	return id, err
}

// Send asks the daemon to broadcast a typed message.
func (c *Client) Send(ctx context.Context, req control.SendRequest) (control.SendResponse, error) {
	var resp control.SendResponse
	err := c.do(ctx, http.MethodPost, control.PathSend, req, &resp)
	return resp, err
}

// Scale sets the number of workers to n.
func (c *Client) Scale(ctx context.Context, n int) (control.ScaleResponse, error) {
	var resp control.ScaleResponse
	err := c.do(ctx, http.MethodPost, control.PathScale, control.ScaleRequest{Workers: n}, &resp)
	return resp, err
}

// DeadLetters returns the work queue's poison lines. A daemon without a
// work queue answers an *APIError with status 409.
func (c *Client) DeadLetters(ctx context.Context) ([]control.DeadLetter, error) {
	var ds []control.DeadLetter
	err := c.do(ctx, http.MethodGet, control.PathDeadLetters, nil, &ds)
	return ds, err
}

// Retry asks the work queue to queue the dead letter seq again.
func (c *Client) Retry(ctx context.Context, seq uint64) (control.RetryResponse, error) {
	var resp control.RetryResponse
	err := c.do(ctx, http.MethodPost, control.PathRetry, control.RetryRequest{Seq: seq}, &resp)
	return resp, err
}

// Stop asks the daemon to shut down. It returns once the daemon has
// accepted; the daemon may still be running then.
func (c *Client) Stop(ctx context.Context) error {
	var resp control.StopResponse
	return c.do(ctx, http.MethodPost, control.PathStop, nil, &resp)
}

// Metrics returns the Prometheus text of /metrics.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var buf bytes.Buffer
	err := c.do(ctx, http.MethodGet, control.PathMetrics, nil, &buf)
	return buf.Bytes(), err
}

// Metric returns the value of the sample of /metrics named name without
// labels, such as "go_goroutines".
func (c *Client) Metric(ctx context.Context, name string) (float64, error) {
	b, err := c.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

// do sends a request with in as its JSON body (none if nil) and decodes a
// 2xx answer into out (copied raw if out is a *bytes.Buffer).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://chattyd"+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ce *ConnError
		if errors.As(err, &ce) {
			return ce
		}
		return fmt.Errorf("%s %s on %s: %w", method, path, c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e control.ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if buf, ok := out.(*bytes.Buffer); ok {
		buf.Write(data)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

// APIError is an error answer of the daemon.
type APIError struct {
	Status  int    // HTTP status, such as 400
	Message string // the daemon's explanation
}

func (e *APIError) Error() string {
	return fmt.Sprintf("chattyd: %s (%d %s)", e.Message, e.Status, http.StatusText(e.Status))
}

// ConnError means the daemon could not be reached at all.
type ConnError struct {
	Path string
	Err  error // from dialing, such as syscall.ENOENT within
	// perm describes the socket's owner, group and mode for EACCES.
	perm string
	// notSocket names what is at Path when connecting was refused because
	// it is no socket, such as "a regular file".
	notSocket string
}

func newConnError(path string, err error) *ConnError {
	e := &ConnError{Path: path, Err: err}
	if errors.Is(err, syscall.EACCES) {
		e.perm = describePerm(path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		e.notSocket = describeNotSocket(path)
	}
	return e
}

// describeNotSocket names what is at path, as connect(2) follows it, when
// that is not a socket: "a regular file", "a directory". It returns "" for
// a socket or what cannot be read.
func describeNotSocket(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	switch m := fi.Mode(); {
	case m&fs.ModeSocket != 0:
		return ""
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}

func (e *ConnError) Error() string {
	switch {
	case errors.Is(e.Err, fs.ErrNotExist):
		return fmt.Sprintf("cannot reach chattyd at %s: no such file; is chattyd running?", e.Path)
	case e.notSocket != "":
		return fmt.Sprintf("cannot reach chattyd at %s: it is %s, not a socket; check --socket, CHATTY_SOCKET or control.socket", e.Path, e.notSocket)
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot reach chattyd at %s: connection refused (a stale socket); is chattyd running?", e.Path)
	case errors.Is(e.Err, syscall.EACCES):
		return fmt.Sprintf("permission denied on %s%s; %s", e.Path, e.perm, permAdvice(e.Path))
	}
	return fmt.Sprintf("cannot reach chattyd at %s: %v", e.Path, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// NotRunning reports whether the error means that no daemon listens: no
// socket file, or one nobody answers on. A path that is no socket is a
// wrong path, not a daemon that is not running.
func (e *ConnError) NotRunning() bool {
	return errors.Is(e.Err, fs.ErrNotExist) || (errors.Is(e.Err, syscall.ECONNREFUSED) && e.notSocket == "")
}

// describePerm returns " (owner root, group chatty, mode 0660)" for path,
// or "" when it cannot be read.
func describePerm(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf(" (owner %s, group %s, mode %04o)", userName(st.Uid), groupName(st.Gid), fi.Mode().Perm())
}

func permAdvice(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "the directory that holds the socket is not open to you; run as root or as chattyd's user"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Gid == 0 {
		return "run as root or as chattyd's user, or configure control.group"
	}
	g := groupName(st.Gid)
	return fmt.Sprintf("run as a member of group %s or as root", g)
}

func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}

func groupName(gid uint32) string {
	id := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(id); err == nil {
		return g.Name
	}
	return id
}
