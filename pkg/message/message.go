// Package message defines chatty's typed messages, the seven types of the
// original client-server (Request, Response, Critical, Info, Warning, Debug,
// Error), and their one-line form in the text protocol (AppendText). The
// line, and why a line break or another control character (IsControl) is
// rejected rather than escaped, are in docs/control.md, "Typed messages".
package message

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Type is the kind of a message. The zero Type is not valid.
type Type uint8

// The message types, as in the original client-server.
const (
	Request Type = iota + 1
	Response
	Critical
	Info
	Warning
	Debug
	Error
)

var typeNames = [...]string{
	Request:  "Request",
	Response: "Response",
	Critical: "Critical",
	Info:     "Info",
	Warning:  "Warning",
	Debug:    "Debug",
	Error:    "Error",
}

// Types returns every valid type, in declaration order.
func Types() []Type {
	return []Type{Request, Response, Critical, Info, Warning, Debug, Error}
}

// ErrUnknownType is wrapped by ParseType's error for a name that is not a type.
var ErrUnknownType = errors.New("unknown message type")

// ParseType returns the type named s, ignoring case ("warning", "WARNING"
// and "Warning" are all Warning). Its error lists the valid types.
func ParseType(s string) (Type, error) {
	for _, t := range Types() {
		if strings.EqualFold(s, typeNames[t]) {
			return t, nil
		}
	}
	names := make([]string, 0, len(typeNames)-1)
	for _, t := range Types() {
		names = append(names, typeNames[t])
	}
	return 0, fmt.Errorf("%w %q: want one of %s", ErrUnknownType, s, strings.Join(names, ", "))
}

// Valid reports whether t is one of the seven types.
func (t Type) Valid() bool { return t >= Request && t <= Error }

// String returns the canonical name, such as "Warning".
func (t Type) String() string {
	if !t.Valid() {
		return fmt.Sprintf("Type(%d)", uint8(t))
	}
	return typeNames[t]
}

// MarshalText implements encoding.TextMarshaler with the canonical name.
func (t Type) MarshalText() ([]byte, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
	}
	return []byte(typeNames[t]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseType.
func (t *Type) UnmarshalText(b []byte) error {
	v, err := ParseType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// MaxTextBytes is the longest text a message may carry, in bytes.
const MaxTextBytes = 4096

// ErrInvalid is wrapped by every error of Message.Validate.
var ErrInvalid = errors.New("invalid message")

// Message is one typed message.
type Message struct {
	Type Type
	Text string
	// Time is when the message was accepted; it is written in UTC.
	Time time.Time
}

// Validate reports why m cannot be sent: an invalid type, an empty text, a
// text longer than MaxTextBytes, or one containing a line break or another
// control character (IsControl).
func (m *Message) Validate() error {
	switch {
	case !m.Type.Valid():
		return fmt.Errorf("%w: type %s is not one of the message types", ErrInvalid, m.Type)
	case m.Text == "":
		return fmt.Errorf("%w: the text is empty", ErrInvalid)
	case len(m.Text) > MaxTextBytes:
		return fmt.Errorf("%w: the text is %d bytes, more than the limit of %d", ErrInvalid, len(m.Text), MaxTextBytes)
	}
	return checkText(m.Text)
}

// checkText reports the first line break or other control character in s.
func checkText(s string) error {
	for i, r := range s {
		switch {
		case r == '\n' || r == '\r':
			return fmt.Errorf("%w: the text contains a line break at byte %d; a message is one line, send several messages instead", ErrInvalid, i)
		case IsControl(r):
			return fmt.Errorf("%w: the text contains the control character %U at byte %d; control characters other than tab are refused, as they would reach terminals and logs as they are", ErrInvalid, r, i)
		}
	}
	return nil
}

// IsControl reports whether r is a control character that a message text
// may not hold and that chattyctl watch and chattyd's log show escaped:
// U+0000 to U+001F except tab, U+007F (DEL) and the C1 controls U+0080 to
// U+009F. Line feed and carriage return are among them.
func IsControl(r rune) bool {
	return (r < 0x20 && r != '\t') || (r >= 0x7f && r <= 0x9f)
}

// AppendEscaped appends s to dst with every control character (IsControl)
// and every byte that is not part of valid UTF-8 replaced by an escape, the
// way journalctl and less show them: "\x1b" for a C0 control or DEL,
// "\u009b" for a C1 control, "\xff" for a stray byte. Everything else,
// tab and backslash included, is copied as it is: the result is for eyes
// and terminals, not meant to be decoded back.
func AppendEscaped(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		switch {
		case r == utf8.RuneError && n == 1:
			dst = append(dst, '\\', 'x', hex[s[0]>>4], hex[s[0]&0xf])
		case IsControl(r) && r < 0x80:
			dst = append(dst, '\\', 'x', hex[r>>4], hex[r&0xf])
		case IsControl(r):
			dst = append(dst, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			dst = append(dst, s[:n]...)
		}
		s = s[n:]
	}
	return dst
}

// Escape returns s as AppendEscaped writes it: s itself when it needs no
// escape.
func Escape(s string) string {
	for i, r := range s {
		if IsControl(r) || (r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD")) {
			return string(AppendEscaped(make([]byte, 0, len(s)+8), []byte(s)))
		}
	}
	return s
}

// timeLayout is RFC 3339 with exactly three fractional digits.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// AppendText appends m's line, without a terminator, to b:
// "2026-11-24T10:00:00.123Z [Warning] disk almost full".
func (m *Message) AppendText(b []byte) []byte {
	b = m.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, " ["...)
	b = append(b, m.Type.String()...)
	b = append(b, "] "...)
	return append(b, m.Text...)
}

// String returns m's line.
func (m *Message) String() string { return string(m.AppendText(nil)) }
