package daemon

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/chatty-dev/chatty/internal/config"
	"github.com/chatty-dev/chatty/pkg/control"
)

// Each client is reported with the name of the listener it connected to.
func TestClientsListener(t *testing.T) {
	cfg := config.Default()
	cfg.Identity = config.Identity{KeyFile: filepath.Join(t.TempDir(), "identity.key"), Generate: true}
	cfg.Broadcast.Signed.Listen = "127.0.0.1:0"
	p := startInProcess(t, cfg, nil, newHeldSource(false))
	st, err := p.ctl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // client's local address: listener's name
	for _, l := range st.Listeners {
		for range 2 {
			c, err := net.Dial("tcp", l.Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			want[c.LocalAddr().String()] = l.Name
		}
	}
	if len(st.Listeners) != 2 {
		t.Fatalf("listeners %+v, want the text and the signed one", st.Listeners)
	}
	var cs []control.Client
	waitUntil(t, "every client", func() bool {
		cs, err = p.ctl.Clients(context.Background())
		return err == nil && len(cs) == len(want)
	})
	for _, c := range cs {
		if c.Listener != want[c.Remote] {
			t.Errorf("client %d from %s: listener %q, want %q", c.ID, c.Remote, c.Listener, want[c.Remote])
		}
	}
}
