package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/broadcast"
	"github.com/chatty-dev/chatty/internal/logging"
	"github.com/chatty-dev/chatty/internal/poll"
	"github.com/chatty-dev/chatty/pkg/identity"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// signedServer runs a real signed listener of stream id with o, in
// chained mode, that retains everything, until the test ends.
func signedServer(t *testing.T, id string, o broadcast.SignedOptions) (*broadcast.Server, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := broadcast.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := broadcast.Limits{QueueLines: 1 << 20, QueueBytes: 1 << 30, MaxClientLine: 256}
	o.Key, o.Mode = priv, signed.Chained
	s, err := broadcast.NewSigned(ln, lim, o, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	s.SetStream(id)
	s.SetRetention(broadcast.Retention{Bytes: 64 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s, writePub(t, pub)
}

func publishN(s *broadcast.Server, from, to int) string {
	var lines [][]byte
	var want strings.Builder
	for i := from; i <= to; i++ {
		lines = append(lines, fmt.Appendf(nil, "line %d", i))
		fmt.Fprintf(&want, "line %d\n", i)
	}
	s.Publish(lines)
	return want.String()
}

// watchUntil runs chattyctl watch with args until the state file names
// message last, then interrupts it, and returns its exit code, output and
// error output.
func watchUntil(t *testing.T, state, stream string, last int, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"chattyctl", "watch"}, args...), &out, &errOut) }()
	want := fmt.Sprintf("%s %d\n", stream, last)
	poll.Eventually(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(state)
		return string(b) == want
	}, "state file at "+want)
	cancel()
	return <-done, out.String(), errOut.String()
}

// watch --signed --from starts at the message asked, --state records the
// last printed, and a watch started again with the state file goes on
// exactly after it; a state of another stream is told and the stream
// printed from its oldest message; --since starts with the messages of
// that time.
func TestWatchSignedResume(t *testing.T) {
	const id = "k5vq3xwz2m7hd4ta"
	s, pubFile := signedServer(t, id, broadcast.SignedOptions{})
	all := publishN(s, 1, 100)
	state := filepath.Join(t.TempDir(), "watch.state")
	addr := s.Addr().String()

	code, out, errOut := watchUntil(t, state, id, 100, "--signed", "--pubkey", pubFile, "--addr", addr, "--from", "5", "--state", state)
	if want := all[strings.Index(all, "line 5\n"):]; code != 0 || out != want {
		t.Fatalf("watch --from 5 = %d, %q; want 0, lines 5 to 100; stderr %s", code, out, errOut)
	}
	more := publishN(s, 101, 150)
	code, out, errOut = watchUntil(t, state, id, 150, "--signed", "--pubkey", pubFile, "--addr", addr, "--state", state)
	if code != 0 || out != more {
		t.Fatalf("watch --state again = %d, %q; want lines 101 to 150; stderr %s", code, out, errOut)
	}

	if err := os.WriteFile(state, []byte("otherstream 120\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = watchUntil(t, state, id, 150, "--signed", "--pubkey", pubFile, "--addr", addr, "--state", state)
	if code != 0 || out != all+more || !strings.Contains(errOut, "not otherstream") {
		t.Fatalf("watch --state of another stream = %d, %d bytes; stderr %s", code, len(out), errOut)
	}

	// --since 1h: everything here is more recent.
	os.Remove(state)
	code, out, errOut = watchUntil(t, state, id, 150, "--signed", "--pubkey", pubFile, "--addr", addr, "--since", "1h", "--state", state)
	if code != 0 || out != all+more {
		t.Fatalf("watch --since 1h = %d, %d bytes; stderr %s", code, len(out), errOut)
	}
}

// keySet is a signed.KeySet of fixed keys.
type keySet []ed25519.PublicKey

func (k keySet) Contains(pub ed25519.PublicKey) bool {
	for _, x := range k {
		if x.Equal(pub) {
			return true
		}
	}
	return false
}

// On a listener that requires authentication, watch sends its RESUME
// after its AUTH, and resumes there.
func TestWatchSignedResumeAfterAuth(t *testing.T) {
	const id = "k5vq3xwz2m7hd4ta"
	keyFile := filepath.Join(t.TempDir(), "watch.key")
	client, err := identity.Generate(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s, pubFile := signedServer(t, id, broadcast.SignedOptions{Authenticate: true, Keys: keySet{client.Public}})
	all := publishN(s, 1, 50)
	state := filepath.Join(t.TempDir(), "watch.state")
	code, out, errOut := watchUntil(t, state, id, 50, "--signed", "--pubkey", pubFile, "--addr", s.Addr().String(),
		"--identity", keyFile, "--from", "20", "--state", state)
	if want := all[strings.Index(all, "line 20\n"):]; code != 0 || out != want {
		t.Fatalf("watch --identity --from 20 = %d, %q; want lines 20 to 50; stderr %s", code, out, errOut)
	}
}
