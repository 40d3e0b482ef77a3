package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/chatty-dev/chatty/pkg/signed"
)

// The configuration's named values are typed: each type decodes its YAML
// name with UnmarshalYAML and prints it back with MarshalYAML, so that a
// loaded Config holds only valid values and nothing downstream parses
// them again. The zero value of each type is not valid; Validate reports
// it, and Parse reports a bad name there, in Validate's order.

// SignMode is broadcast.signed.mode: per-message or chained.
type SignMode signed.Mode

// The values of broadcast.signed.mode.
const (
	SignPerMessage = SignMode(signed.PerMessage)
	SignChained    = SignMode(signed.Chained)
)

var signModes = choices[SignMode]{{"chained", SignChained}, {"per-message", SignPerMessage}}

// Mode returns the signing mode for package signed.
func (m SignMode) Mode() signed.Mode                 { return signed.Mode(m) }
func (m SignMode) String() string                    { return signModes.name(m) }
func (m SignMode) MarshalYAML() (any, error)         { return signModes.marshal(m) }
func (m *SignMode) UnmarshalYAML(n *yaml.Node) error { return signModes.unmarshal(n, m) }

// MessageType is broadcast.signed.feed_type: one of the seven message
// types of package message, by name, in any case.
type MessageType message.Type

// Type returns the message type for package message.
func (t MessageType) Type() message.Type { return message.Type(t) }
func (t MessageType) String() string     { return t.Type().String() }

func (t MessageType) MarshalYAML() (any, error) {
	if !t.Type().Valid() {
		return nil, fmt.Errorf("config: invalid message type %d", uint8(t))
	}
	return t.String(), nil
}

func (t *MessageType) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := message.ParseType(s)
	if err != nil {
		*t = 0
		return badValue(n, *t, err.Error())
	}
	*t = MessageType(v)
	return nil
}

// messageTypes lists the names of the message types, for errors.
func messageTypes() string {
	var names []string
	for _, t := range message.Types() {
		names = append(names, t.String())
	}
	return strings.Join(names, ", ")
}

// Auth is broadcast.signed.auth: none or authorized_keys.
type Auth uint8

// The values of broadcast.signed.auth.
const (
	AuthNone Auth = iota + 1
	AuthAuthorizedKeys
)

var auths = choices[Auth]{{"none", AuthNone}, {"authorized_keys", AuthAuthorizedKeys}}

func (a Auth) String() string                    { return auths.name(a) }
func (a Auth) MarshalYAML() (any, error)         { return auths.marshal(a) }
func (a *Auth) UnmarshalYAML(n *yaml.Node) error { return auths.unmarshal(n, a) }

// Source is feed.source: stdin or fifo.
type Source uint8

// The values of feed.source.
const (
	SourceStdin Source = iota + 1
	SourceFIFO
)

var sources = choices[Source]{{"stdin", SourceStdin}, {"fifo", SourceFIFO}}

func (s Source) String() string                    { return sources.name(s) }
func (s Source) MarshalYAML() (any, error)         { return sources.marshal(s) }
func (s *Source) UnmarshalYAML(n *yaml.Node) error { return sources.unmarshal(n, s) }

// Delivery is broadcast.delivery: all (broadcast) or one (work queue).
type Delivery uint8

// The values of broadcast.delivery.
const (
	DeliveryAll Delivery = iota + 1
	DeliveryOne
)

var deliveries = choices[Delivery]{{"all", DeliveryAll}, {"one", DeliveryOne}}

func (d Delivery) String() string                    { return deliveries.name(d) }
func (d Delivery) MarshalYAML() (any, error)         { return deliveries.marshal(d) }
func (d *Delivery) UnmarshalYAML(n *yaml.Node) error { return deliveries.unmarshal(n, d) }

// OnEOF is feed.on_eof: keep (run on when the feed ends) or stop.
type OnEOF uint8

// The values of feed.on_eof.
const (
	OnEOFKeep OnEOF = iota + 1
	OnEOFStop
)

var onEOFs = choices[OnEOF]{{"keep", OnEOFKeep}, {"stop", OnEOFStop}}

func (e OnEOF) String() string                    { return onEOFs.name(e) }
func (e OnEOF) MarshalYAML() (any, error)         { return onEOFs.marshal(e) }
func (e *OnEOF) UnmarshalYAML(n *yaml.Node) error { return onEOFs.unmarshal(n, e) }

// Protocol is pool.worker.protocol: text or signed.
type Protocol uint8

// The values of pool.worker.protocol.
const (
	ProtocolText Protocol = iota + 1
	ProtocolSigned
)

var protocols = choices[Protocol]{{"text", ProtocolText}, {"signed", ProtocolSigned}}

func (p Protocol) String() string                    { return protocols.name(p) }
func (p Protocol) MarshalYAML() (any, error)         { return protocols.marshal(p) }
func (p *Protocol) UnmarshalYAML(n *yaml.Node) error { return protocols.unmarshal(n, p) }

// Replay is pool.replay: unacked (a slot's next worker gets the lines its
// last worker did not acknowledge) or none (it starts live).
type Replay uint8

// The values of pool.replay.
const (
	ReplayUnacked Replay = iota + 1
	ReplayNone
)

var replays = choices[Replay]{{"unacked", ReplayUnacked}, {"none", ReplayNone}}

func (r Replay) String() string                    { return replays.name(r) }
func (r Replay) MarshalYAML() (any, error)         { return replays.marshal(r) }
func (r *Replay) UnmarshalYAML(n *yaml.Node) error { return replays.unmarshal(n, r) }

// LogLevel is log.level: debug, info, warning (or warn) or error.
type LogLevel uint8

// The values of log.level.
const (
	LevelDebug LogLevel = iota + 1
	LevelInfo
	LevelWarning
	LevelError
)

var logLevels = choices[LogLevel]{
	{"debug", LevelDebug}, {"info", LevelInfo}, {"warning", LevelWarning}, {"error", LevelError},
	{"warn", LevelWarning},
}

func (l LogLevel) String() string                    { return logLevels.name(l) }
func (l LogLevel) MarshalYAML() (any, error)         { return logLevels.marshal(l) }
func (l *LogLevel) UnmarshalYAML(n *yaml.Node) error { return logLevels.unmarshal(n, l) }

// LogFormat is log.format: text or json.
type LogFormat uint8

// The values of log.format.
const (
	FormatText LogFormat = iota + 1
	FormatJSON
)

var logFormats = choices[LogFormat]{{"text", FormatText}, {"json", FormatJSON}}

func (f LogFormat) String() string                    { return logFormats.name(f) }
func (f LogFormat) MarshalYAML() (any, error)         { return logFormats.marshal(f) }
func (f *LogFormat) UnmarshalYAML(n *yaml.Node) error { return logFormats.unmarshal(n, f) }

// choice is one name of a named configuration value.
type choice[T ~uint8] struct {
	name  string
	value T
}

// choices are the names of one type's values, in the order errors list
// them. A later name of a value already named is an alias: accepted, but
// neither printed nor listed.
type choices[T ~uint8] []choice[T]

// name returns the name of v, or the type and number of a value that has
// none.
func (cs choices[T]) name(v T) string {
	for _, c := range cs {
		if c.value == v {
			return c.name
		}
	}
	return fmt.Sprintf("%T(%d)", v, uint8(v))
}

// valid reports whether v is one of the values.
func (cs choices[T]) valid(v T) bool {
	for _, c := range cs {
		if c.value == v {
			return true
		}
	}
	return false
}

// parse returns the value named s.
func (cs choices[T]) parse(s string) (T, bool) {
	for _, c := range cs {
		if c.name == s {
			return c.value, true
		}
	}
	return 0, false
}

// String lists the names for an error: "a, b or c".
func (cs choices[T]) String() string {
	var names []string
	for _, c := range cs {
		if cs.name(c.value) == c.name { // not an alias
			names = append(names, c.name)
		}
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// problem describes the bad name s.
func (cs choices[T]) problem(s string) string {
	return fmt.Sprintf("must be %s, got %q", cs, s)
}

func (cs choices[T]) marshal(v T) (any, error) {
	if !cs.valid(v) {
		return nil, fmt.Errorf("config: invalid value %s", cs.name(v))
	}
	return cs.name(v), nil
}

// unmarshal decodes a name into out. A node that is no string is
// reported as for a string field; a name that is not one of cs leaves
// out zero and is reported by badValue.
func (cs choices[T]) unmarshal(n *yaml.Node, out *T) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, ok := cs.parse(s)
	*out = v
	if !ok {
		return badValue(n, v, cs.problem(s))
	}
	return nil
}
