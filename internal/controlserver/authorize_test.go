package controlserver

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func TestMayChange(t *testing.T) {
	groups := func(uid uint32) ([]string, error) {
		switch uid {
		case 1001:
			return []string{"1001", "500"}, nil
		case 1002:
			return []string{"1002"}, nil
		}
		return nil, errors.New("unknown user")
	}
	withGroup := authorizer{euid: 999, gid: 500, group: "chatty", groupIDs: groups}
	noGroup := authorizer{euid: 999, gid: -1, groupIDs: groups}
	tests := []struct {
		name    string
		a       authorizer
		p       peer
		want    bool
		wantErr bool
	}{
		{"unknown peer", withGroup, peer{}, false, false},
		{"root", noGroup, peer{known: true, uid: 0, gid: 0}, true, false},
		{"daemon's user", noGroup, peer{known: true, uid: 999, gid: 999}, true, false},
		{"other without group configured", noGroup, peer{known: true, uid: 1001, gid: 500}, false, false},
		{"primary group", withGroup, peer{known: true, uid: 1003, gid: 500}, true, false},
		{"supplementary group", withGroup, peer{known: true, uid: 1001, gid: 1001}, true, false},
		{"not a member", withGroup, peer{known: true, uid: 1002, gid: 1002}, false, false},
		{"unknown user", withGroup, peer{known: true, uid: 4000, gid: 4000}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.mayChange(tt.p)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("mayChange(%+v) = %v, %v; want %v, error %v", tt.p, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestRefusalLogged checks that a refused change is answered 403 and
// logged with the peer's uid, without reaching the backend.
func TestRefusalLogged(t *testing.T) {
	dir, err := os.MkdirTemp("", "ct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	logger, hook := logtest.NewNullLogger()
	b := &countingBackend{}
	s, err := New(Options{Path: filepath.Join(dir, "c.sock")}, b, logrus.NewEntry(logger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close() })
	s.auth.euid = 999 // the test may run as any user; make uid 1234 a stranger

	req := httptest.NewRequest("POST", control.PathScale, strings.NewReader(`{"workers":1}`))
	req = req.WithContext(context.WithValue(req.Context(), peerKey{}, peer{known: true, uid: 1234, gid: 1234, pid: 77}))
	rec := httptest.NewRecorder()
	s.http.Handler.ServeHTTP(rec, req)

	if rec.Code != 403 || !strings.Contains(rec.Body.String(), "uid 1234 may only read") {
		t.Fatalf("answer = %d %s; want 403 naming uid 1234", rec.Code, rec.Body)
	}
	if b.calls != 0 {
		t.Fatalf("backend called %d times", b.calls)
	}
	e := hook.LastEntry()
	if e == nil || e.Level != logrus.WarnLevel || e.Data["uid"] != uint32(1234) || !strings.Contains(e.Message, "uid 1234") {
		t.Fatalf("log entry = %+v; want a warning naming uid 1234", e)
	}
}

type countingBackend struct{ calls int }

func (b *countingBackend) Status() control.Status               { b.calls++; return control.Status{} }
func (b *countingBackend) Clients() []control.Client            { b.calls++; return nil }
func (b *countingBackend) Workers() []control.Worker            { b.calls++; return nil }
func (b *countingBackend) Send(message.Message) (uint64, error) { b.calls++; return 0, nil }
func (b *countingBackend) Scale(int) (int, error)               { b.calls++; return 0, nil }
func (b *countingBackend) Identity() (control.Identity, error) {
	b.calls++
	return control.Identity{}, nil
}
func (b *countingBackend) Stop()                                      { b.calls++ }
func (b *countingBackend) DeadLetters() ([]control.DeadLetter, error) { b.calls++; return nil, nil }
func (b *countingBackend) Retry(uint64) error                         { b.calls++; return nil }
