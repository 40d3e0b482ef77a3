package integration

import (
	"net"
	"testing"

	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/test/harness"
)

// A client of the text listener and one of the signed listener, connected
// at once, have ids of their own in chattyctl clients: both listeners
// number their clients from one count.
func TestClientIDsUniqueAcrossListeners(t *testing.T) {
	t.Parallel()
	d, addr, _, _ := startSignedDaemon(t, "chained", "")
	harness.Dial(t, d.Addr())
	sc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	statusUntil(t, d, "both clients connected", func(st control.Status) bool { return st.Clients.Connected == 2 })

	var clients []wireClient
	ctlJSON(t, d.ControlSocket(), &clients, "clients")
	if len(clients) != 2 || clients[0].ID == clients[1].ID {
		t.Fatalf("chattyctl clients shows %+v; want two clients with different ids", clients)
	}
}
