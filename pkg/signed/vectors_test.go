package signed

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
	"golang.org/x/crypto/blake2b"
)

// The test vectors live in docs/protocol.md, in fenced blocks opened by
// "```vectors NAME": the test parses the document itself, so the document
// cannot drift from the code. go test -run TestVectors -update rewrites
// the blocks from the code (review the diff!).
var update = flag.Bool("update", false, "rewrite the test vectors in docs/protocol.md")

const protocolDoc = "../../docs/protocol.md"

// kv is one line of a vector block.
type kv struct{ key, value string }

// vectorBlock is a named block of key-value pairs, in order.
type vectorBlock struct {
	name  string
	lines []kv
}

func (b *vectorBlock) add(key string, value any) {
	var s string
	switch v := value.(type) {
	case []byte:
		s = hex.EncodeToString(v)
	case string:
		s = v
	default:
		s = fmt.Sprint(v)
	}
	b.lines = append(b.lines, kv{key, s})
}

func (b *vectorBlock) get(t *testing.T, key string) string {
	t.Helper()
	for _, l := range b.lines {
		if l.key == key {
			return l.value
		}
	}
	t.Fatalf("vector %s has no %s", b.name, key)
	return ""
}

func (b *vectorBlock) hex(t *testing.T, key string) []byte {
	t.Helper()
	v, err := hex.DecodeString(b.get(t, key))
	if err != nil {
		t.Fatalf("vector %s %s: %v", b.name, key, err)
	}
	return v
}

func (b *vectorBlock) int(t *testing.T, key string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(b.get(t, key), 10, 64)
	if err != nil {
		t.Fatalf("vector %s %s: %v", b.name, key, err)
	}
	return v
}

// format renders the block as it appears in the document: keys padded to
// one column, hex wrapped at 64 digits onto indented lines.
func (b *vectorBlock) format() string {
	width := 0
	for _, l := range b.lines {
		width = max(width, len(l.key))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "```vectors %s\n", b.name)
	for _, l := range b.lines {
		v := l.value
		first := true
		for first || v != "" {
			n := min(len(v), 64)
			if strings.HasPrefix(v, `"`) {
				n = len(v)
			}
			if first {
				fmt.Fprintf(&sb, "%-*s  %s\n", width, l.key, v[:n])
			} else {
				fmt.Fprintf(&sb, "%*s  %s\n", width, "", v[:n])
			}
			v, first = v[n:], false
		}
	}
	sb.WriteString("```\n")
	return sb.String()
}

// parseVectors returns the vector blocks of doc and, for -update, the
// document with each block replaced by a placeholder index.
func parseVectors(doc string) ([]*vectorBlock, error) {
	var blocks []*vectorBlock
	var cur *vectorBlock
	sc := bufio.NewScanner(strings.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```vectors "):
			cur = &vectorBlock{name: strings.TrimPrefix(line, "```vectors ")}
			blocks = append(blocks, cur)
		case cur == nil:
		case line == "```":
			cur = nil
		case strings.HasPrefix(line, " "):
			if len(cur.lines) == 0 {
				return nil, fmt.Errorf("line %d: continuation without a key", n)
			}
			cur.lines[len(cur.lines)-1].value += strings.TrimSpace(line)
		default:
			key, value, _ := strings.Cut(line, " ")
			cur.lines = append(cur.lines, kv{key, strings.TrimSpace(value)})
		}
	}
	return blocks, sc.Err()
}

// fixedReader yields the same bytes forever.
type fixedReader []byte

func (r fixedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r[i%len(r)]
	}
	return len(p), nil
}

var (
	vecStream  = StreamID{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf}
	vecSession = Session{0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf}
	vecNow     = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
)

type vecMsg struct {
	typ     message.Type
	ts      time.Time
	payload string
}

// makeVectors computes the blocks from the fixed inputs with the code.
func makeVectors(t *testing.T) []*vectorBlock {
	priv := testKey()
	clock := vecNow
	newEnc := func(mode Mode) *Encoder {
		e, err := NewEncoder(priv, mode, EncoderOptions{StreamID: vecStream, CheckpointEvery: 1000, CheckpointInterval: time.Hour,
			Now: func() time.Time { return clock }, Rand: fixedReader(vecSession[:])})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	header := func(b *vectorBlock, mode Mode) {
		b.add("seed", priv.Seed())
		b.add("public-key", []byte(priv.Public().(ed25519.PublicKey)))
		b.add("stream-id", vecStream[:])
		b.add("session", vecSession[:])
		b.add("mode", fmt.Sprintf("%d (%v)", mode, mode))
	}
	anchor := func(b *vectorBlock, e *Encoder) []byte {
		var head Digest
		c := appendCanonicalAnchor(nil, &vecStream, &vecSession, e.mode, 0, clock.UnixNano(), &head)
		d := sum(c)
		frame, _, err := e.Anchor(nil)
		if err != nil {
			t.Fatal(err)
		}
		b.add("anchor.time", clock.UnixNano())
		b.add("anchor.canonical", c)
		b.add("anchor.digest", d[:])
		b.add("anchor.signature", ed25519.Sign(priv, d[:]))
		b.add("anchor.frame", frame)
		return frame
	}

	per := &vectorBlock{name: "per-message"}
	header(per, PerMessage)
	e := newEnc(PerMessage)
	all := anchor(per, e)
	m := vecMsg{message.Warning, vecNow.Add(123 * time.Millisecond), "disk almost full"}
	c := appendCanonicalMessage(nil, &vecStream, 1, m.typ, m.ts.UnixNano(), []byte(m.payload))
	d := sum(c)
	frame, _, _ := e.Append(nil, m.typ, m.ts, []byte(m.payload))
	per.add("message.1.seq", 1)
	per.add("message.1.type", fmt.Sprintf("%d (%v)", m.typ, m.typ))
	per.add("message.1.time", m.ts.UnixNano())
	per.add("message.1.payload", strconv.Quote(m.payload))
	per.add("message.1.canonical", c)
	per.add("message.1.digest", d[:])
	per.add("message.1.signature", ed25519.Sign(priv, d[:]))
	per.add("message.1.frame", frame)
	all = append(all, frame...)
	per.add("stream", all)

	ch := &vectorBlock{name: "chained"}
	header(ch, Chained)
	e = newEnc(Chained)
	all = anchor(ch, e)
	var head Digest
	msgs := []vecMsg{
		{message.Info, vecNow.Add(1 * time.Millisecond), "first"},
		{message.Warning, vecNow.Add(2 * time.Millisecond), "second"},
		{message.Error, vecNow.Add(3 * time.Millisecond), "third"},
	}
	for i, m := range msgs {
		p := fmt.Sprintf("message.%d.", i+1)
		c := appendCanonicalMessage(nil, &vecStream, uint64(i+1), m.typ, m.ts.UnixNano(), []byte(m.payload))
		in := append(appendChainPrefix(nil, &head), c...)
		head = sum(in)
		frame, _, _ := e.Append(nil, m.typ, m.ts, []byte(m.payload))
		ch.add(p+"seq", i+1)
		ch.add(p+"type", fmt.Sprintf("%d (%v)", m.typ, m.typ))
		ch.add(p+"time", m.ts.UnixNano())
		ch.add(p+"payload", strconv.Quote(m.payload))
		ch.add(p+"canonical", c)
		ch.add(p+"chain-input", in)
		ch.add(p+"digest", head[:])
		ch.add(p+"frame", frame)
		all = append(all, frame...)
	}
	clock = vecNow.Add(10 * time.Millisecond)
	c = appendCanonicalCheckpoint(nil, &vecStream, 3, clock.UnixNano(), &head)
	d = sum(c)
	frame = e.Checkpoint(nil)
	ch.add("checkpoint.seq", 3)
	ch.add("checkpoint.time", clock.UnixNano())
	ch.add("checkpoint.canonical", c)
	ch.add("checkpoint.digest", d[:])
	ch.add("checkpoint.signature", ed25519.Sign(priv, d[:]))
	ch.add("checkpoint.frame", frame)
	all = append(all, frame...)
	ch.add("stream", all)

	up := &vectorBlock{name: "upstream"}
	up.add("client-seed", clientPriv.Seed())
	up.add("client-public-key", []byte(clientPriv.Public().(ed25519.PublicKey)))
	up.add("daemon-public-key", []byte(priv.Public().(ed25519.PublicKey)))
	up.add("stream-id", vecStream[:])
	up.add("session", vecSession[:])
	cs, err := NewClientSigner(clientPriv, AnchorInfo{Stream: vecStream, Session: vecSession})
	if err != nil {
		t.Fatal(err)
	}
	m = vecMsg{message.Request, vecNow.Add(time.Second), "hello"}
	c = appendCanonicalClient(nil, &vecStream, &vecSession, clientPriv.Public().(ed25519.PublicKey), 1, m.typ, m.ts.UnixNano(), []byte(m.payload))
	d = sum(c)
	frame, req, _ := cs.Append(nil, m.typ, m.ts, []byte(m.payload))
	up.add("request.seq", 1)
	up.add("request.type", fmt.Sprintf("%d (%v)", m.typ, m.typ))
	up.add("request.time", m.ts.UnixNano())
	up.add("request.payload", strconv.Quote(m.payload))
	up.add("request.canonical", c)
	up.add("request.digest", d[:])
	up.add("request.signature", ed25519.Sign(clientPriv, d[:]))
	up.add("request.frame", frame)
	r := &Response{Session: vecSession, Request: req, Type: message.Response, Time: vecNow.Add(time.Second + time.Millisecond), Payload: []byte("Acknowledge: hello")}
	c = appendCanonicalResponse(nil, &vecStream, &vecSession, &req, r.Type, r.Time.UnixNano(), r.Payload)
	d = sum(c)
	frame, err = newEnc(PerMessage).AppendResponse(nil, r)
	if err != nil {
		t.Fatal(err)
	}
	up.add("response.type", fmt.Sprintf("%d (%v)", r.Type, r.Type))
	up.add("response.time", r.Time.UnixNano())
	up.add("response.payload", strconv.Quote(string(r.Payload)))
	up.add("response.canonical", c)
	up.add("response.digest", d[:])
	up.add("response.signature", ed25519.Sign(priv, d[:]))
	up.add("response.frame", frame)

	au := &vectorBlock{name: "auth"}
	au.add("daemon-public-key", []byte(priv.Public().(ed25519.PublicKey)))
	au.add("client-seed", clientPriv.Seed())
	au.add("client-public-key", []byte(clientPriv.Public().(ed25519.PublicKey)))
	au.add("stream-id", vecStream[:])
	au.add("session", vecSession[:])
	var binding Binding // plain TCP
	au.add("binding", binding[:])
	clock = vecNow
	c = appendCanonicalChallenge(nil, &vecStream, &vecSession, clock.UnixNano())
	d = sum(c)
	au.add("challenge.time", clock.UnixNano())
	au.add("challenge.canonical", c)
	au.add("challenge.digest", d[:])
	au.add("challenge.signature", ed25519.Sign(priv, d[:]))
	au.add("challenge.frame", newEnc(PerMessage).AppendChallenge(nil, vecSession))
	authTime := vecNow.Add(5 * time.Millisecond)
	c = appendCanonicalAuth(nil, &vecStream, &vecSession, &binding, clientPriv.Public().(ed25519.PublicKey), authTime.UnixNano())
	d = sum(c)
	frame, err = AppendAuth(nil, clientPriv, Challenge{Stream: vecStream, Session: vecSession}, binding, authTime)
	if err != nil {
		t.Fatal(err)
	}
	au.add("auth.time", authTime.UnixNano())
	au.add("auth.canonical", c)
	au.add("auth.digest", d[:])
	au.add("auth.signature", ed25519.Sign(clientPriv, d[:]))
	au.add("auth.frame", frame)
	rs := &vectorBlock{name: "resume"}
	header(rs, Chained)
	q := ResumeRequest{Nonce: [16]byte{0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf},
		From: FromSeq, Seq: 3, Stream: "k5vq3xwz2m7hd4ta"}
	frame, err = AppendResume(nil, q)
	if err != nil {
		t.Fatal(err)
	}
	rs.add("resume.nonce", q.Nonce[:])
	rs.add("resume.from", fmt.Sprintf("%d (%v)", q.From, q.From))
	rs.add("resume.seq", q.Seq)
	rs.add("resume.stream", strconv.Quote(q.Stream))
	rs.add("resume.frame", frame)
	// The chained block's stream, resumed after its second message.
	clock = vecNow
	e = newEnc(Chained)
	var frames [][]byte
	for _, m := range msgs {
		f, _, _ := e.Append(nil, m.typ, m.ts, []byte(m.payload))
		frames = append(frames, f)
	}
	head = ChainHeadAt(bytes.Join(frames[:2], nil), Digest{})
	clock = vecNow.Add(10 * time.Millisecond)
	res := Resumed{Anchor: AnchorInfo{Stream: vecStream, Session: vecSession, Mode: Chained, Seq: 2, Head: head},
		Request: q, Result: ResumedAsAsked, Stream: q.Stream}
	c = appendCanonicalResumed(nil, &res, clock.UnixNano())
	d = sum(c)
	resumed, err := e.AppendResumed(nil, res)
	if err != nil {
		t.Fatal(err)
	}
	cp := e.Checkpoint(nil)
	rs.add("resumed.seq", 2)
	rs.add("resumed.time", clock.UnixNano())
	rs.add("resumed.head", head[:])
	rs.add("resumed.result", fmt.Sprintf("%d (%v)", res.Result, res.Result))
	rs.add("resumed.stream", strconv.Quote(res.Stream))
	rs.add("resumed.canonical", c)
	rs.add("resumed.digest", d[:])
	rs.add("resumed.signature", ed25519.Sign(priv, d[:]))
	rs.add("resumed.frame", resumed)
	// The same point answering a RESUME from message 1, which is gone.
	gq := q
	gq.Seq = 1
	gres := res
	gres.Request, gres.Result = gq, ResumedGap
	c = appendCanonicalResumed(nil, &gres, clock.UnixNano())
	d = sum(c)
	gap, err := e.AppendResumed(nil, gres)
	if err != nil {
		t.Fatal(err)
	}
	rs.add("gap.asked", gq.Seq)
	rs.add("gap.result", fmt.Sprintf("%d (%v)", gres.Result, gres.Result))
	rs.add("gap.canonical", c)
	rs.add("gap.digest", d[:])
	rs.add("gap.signature", ed25519.Sign(priv, d[:]))
	rs.add("gap.frame", gap)
	rs.add("message.3.frame", frames[2])
	rs.add("checkpoint.frame", cp)
	rs.add("stream", bytes.Join([][]byte{resumed, frames[2], cp}, nil))
	return []*vectorBlock{per, ch, up, au, rs}
}

// TestVectors checks the document's vectors both ways: the code encodes
// exactly the documented bytes, and the documented bytes verify on their
// own (digest = BLAKE2b-256 of the canonical bytes, signature over the
// digest with the documented key) and through a Verifier.
func TestVectors(t *testing.T) {
	docBytes, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(docBytes)
	want := makeVectors(t)
	if *update {
		for _, b := range want {
			start := strings.Index(doc, "```vectors "+b.name+"\n")
			if start < 0 {
				t.Fatalf("no vectors block %q in %s", b.name, protocolDoc)
			}
			end := strings.Index(doc[start:], "\n```\n") + start + len("\n```\n")
			doc = doc[:start] + b.format() + doc[end:]
		}
		if err := os.WriteFile(protocolDoc, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := parseVectors(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s has %d vector blocks, want %d (run go test -run TestVectors -update)", protocolDoc, len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		t.Run(w.name, func(t *testing.T) {
			if g.name != w.name || len(g.lines) != len(w.lines) {
				t.Fatalf("block %q has %d lines, want %q with %d", g.name, len(g.lines), w.name, len(w.lines))
			}
			for j, l := range w.lines {
				if g.lines[j] != l {
					t.Errorf("%s: document has\n%s %s\ncode makes\n%s %s", w.name, g.lines[j].key, g.lines[j].value, l.key, l.value)
				}
			}
			checkDocumented(t, g)
		})
	}
}

// checkDocumented verifies a block's documented bytes without the encoder.
func checkDocumented(t *testing.T, b *vectorBlock) {
	pubKey := "public-key"
	if b.name == "upstream" || b.name == "auth" {
		pubKey = "client-public-key"
	}
	pub := ed25519.PublicKey(b.hex(t, pubKey))
	for _, l := range b.lines {
		obj, field, ok := strings.Cut(l.key, ".")
		if !ok || !strings.HasSuffix(field, "digest") {
			continue
		}
		prefix := strings.TrimSuffix(l.key, "digest")
		input := b.hex(t, prefix+"canonical")
		if b.name == "chained" && strings.HasPrefix(obj, "message") {
			input = b.hex(t, prefix+"chain-input")
			if !bytes.HasSuffix(input, b.hex(t, prefix+"canonical")) {
				t.Errorf("%s: chain input does not end with the canonical encoding", prefix)
			}
		}
		d := blake2b.Sum256(input)
		if !bytes.Equal(d[:], b.hex(t, l.key)) {
			t.Errorf("%s is not BLAKE2b-256 of its input", l.key)
		}
		if b.name == "chained" && strings.HasPrefix(obj, "message") {
			continue // chained messages carry no signature
		}
		key := pub
		if (b.name == "upstream" && obj == "response") || (b.name == "auth" && obj == "challenge") {
			key = ed25519.PublicKey(b.hex(t, "daemon-public-key"))
		}
		if !ed25519.Verify(key, d[:], b.hex(t, prefix+"signature")) {
			t.Errorf("%ssignature does not verify", prefix)
		}
	}
	switch b.name {
	case "auth":
		checkDocumentedAuth(t, b, pub)
		return
	case "resume":
		checkDocumentedResume(t, b, pub)
		return
	}
	now := time.Unix(0, b.int(t, map[bool]string{true: "request.time", false: "anchor.time"}[b.name == "upstream"]))
	if b.name == "upstream" {
		u := NewUpstreamVerifier(keySet{pub}, StreamID(b.hex(t, "stream-id")), Session(b.hex(t, "session")), UpstreamOptions{Now: func() time.Time { return now }})
		up, err := u.Verify(decodeOne(t, b.hex(t, "request.frame"), 0))
		if err != nil || string(up.Payload) != "hello" {
			t.Errorf("documented request: %+v %v", up, err)
		}
		return
	}
	v, err := NewVerifier(pub, VerifierOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := v.Feed(b.hex(t, "stream"), func(m *Message) {
		got = append(got, fmt.Sprintf("%d %d %d %q", m.Seq, m.Type, m.Time.UnixNano(), m.Payload))
	}); err != nil {
		t.Fatalf("documented stream: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("documented stream: %v", err)
	}
	var want []string
	for i := 1; ; i++ {
		p := fmt.Sprintf("message.%d.", i)
		if !strings.Contains(fmt.Sprint(b.lines), p+"seq") {
			break
		}
		typ, _, _ := strings.Cut(b.get(t, p+"type"), " ")
		want = append(want, fmt.Sprintf("%s %s %s %s", b.get(t, p+"seq"), typ, b.get(t, p+"time"), b.get(t, p+"payload")))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("documented stream delivers\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// checkDocumentedAuth runs the documented CHALLENGE through a client's
// Verifier and the documented AUTH through the daemon's check.
func checkDocumentedAuth(t *testing.T, b *vectorBlock, clientPub ed25519.PublicKey) {
	now := time.Unix(0, b.int(t, "auth.time"))
	clock := func() time.Time { return now }
	v, err := NewVerifier(ed25519.PublicKey(b.hex(t, "daemon-public-key")), VerifierOptions{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Feed(b.hex(t, "challenge.frame"), func(*Message) {}); err != nil {
		t.Fatalf("documented challenge: %v", err)
	}
	stream, session := StreamID(b.hex(t, "stream-id")), Session(b.hex(t, "session"))
	if ch, ok := v.Challenge(); !ok || ch.Stream != stream || ch.Session != session {
		t.Fatalf("documented challenge read as %+v", ch)
	}
	u := NewUpstreamVerifier(nil, stream, session, UpstreamOptions{Now: clock})
	key, err := u.VerifyAuth(decodeOne(t, b.hex(t, "auth.frame"), 0), keySet{clientPub}, Binding(b.hex(t, "binding")))
	if err != nil || !key.Equal(clientPub) {
		t.Fatalf("documented auth: %x %v", []byte(key), err)
	}
}

// checkDocumentedResume reads the documented RESUME as the daemon does,
// and runs the documented stream through a client's Verifier that sent
// it: the RESUMED anchors it after message 2, and message 3 verifies
// under its checkpoint.
func checkDocumentedResume(t *testing.T, b *vectorBlock, pub ed25519.PublicKey) {
	q, err := ParseResume(decodeOne(t, b.hex(t, "resume.frame"), 0))
	if err != nil {
		t.Fatalf("documented RESUME: %v", err)
	}
	stream, _ := strconv.Unquote(b.get(t, "resume.stream"))
	if !bytes.Equal(q.Nonce[:], b.hex(t, "resume.nonce")) || q.From != FromSeq || q.Seq != uint64(b.int(t, "resume.seq")) || q.Stream != stream {
		t.Fatalf("documented RESUME reads as %+v", q)
	}
	now := time.Unix(0, b.int(t, "resumed.time"))
	v, err := NewVerifier(pub, VerifierOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	frame, err := v.Resume(q)
	if err != nil || !bytes.Equal(frame, b.hex(t, "resume.frame")) {
		t.Fatalf("the Verifier's RESUME: %x %v", frame, err)
	}
	var got []string
	if err := v.Feed(b.hex(t, "stream"), func(m *Message) {
		got = append(got, fmt.Sprintf("%v %d %q", m.Kind, m.Seq, m.Payload))
	}); err != nil {
		t.Fatalf("documented stream: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if want := `RESUMED 2 ""|CHAINED 3 "third"`; strings.Join(got, "|") != want {
		t.Fatalf("documented stream delivers %s, want %s", strings.Join(got, "|"), want)
	}
	if r, ok := v.Resumed(); !ok || r.Result != ResumedAsAsked || r.Stream != stream || r.Anchor.Head != Digest(b.hex(t, "resumed.head")) {
		t.Fatalf("documented RESUMED reads as %+v", r)
	}
	// The gap: the same point, answering a RESUME from message 1.
	q.Seq = uint64(b.int(t, "gap.asked"))
	v, _ = NewVerifier(pub, VerifierOptions{Now: func() time.Time { return now }})
	if _, err := v.Resume(q); err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	rest := bytes.Join([][]byte{b.hex(t, "gap.frame"), b.hex(t, "message.3.frame"), b.hex(t, "checkpoint.frame")}, nil)
	if err := v.Feed(rest, func(m *Message) { got = append(got, fmt.Sprintf("%v %d %q", m.Kind, m.Seq, m.Payload)) }); err != nil {
		t.Fatalf("documented gap: %v", err)
	}
	r, _ := v.Resumed()
	if from, to, ok := r.Gap(); !ok || from != 1 || to != 2 || strings.Join(got, "|") != `RESUMED 2 ""|CHAINED 3 "third"` {
		t.Fatalf("documented gap reads as %d-%d %v, delivers %s", from, to, ok, strings.Join(got, "|"))
	}
}
