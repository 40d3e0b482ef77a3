package message

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseType(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Type
	}{
		{"canonical", "Warning", Warning},
		{"lower", "request", Request},
		{"upper", "CRITICAL", Critical},
		{"mixed", "dEbUg", Debug},
		{"response", "response", Response},
		{"info", "Info", Info},
		{"error", "error", Error},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseType(tt.in)
			if err != nil || got != tt.want {
				t.Fatalf("ParseType(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseTypeRejects(t *testing.T) {
	for _, in := range []string{"", "warn", "Warning ", "Notice", "Type(3)"} {
		_, err := ParseType(in)
		if !errors.Is(err, ErrUnknownType) {
			t.Errorf("ParseType(%q) error = %v; want ErrUnknownType", in, err)
			continue
		}
		want := "want one of Request, Response, Critical, Info, Warning, Debug, Error"
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseType(%q) error %q does not list the types", in, err)
		}
	}
}

func TestTypeStringRoundTrip(t *testing.T) {
	for _, typ := range Types() {
		got, err := ParseType(typ.String())
		if err != nil || got != typ {
			t.Errorf("ParseType(%q) = %v, %v", typ.String(), got, err)
		}
	}
	if Type(0).Valid() || Type(8).Valid() {
		t.Error("Type 0 and 8 must not be valid")
	}
}

func TestTypeJSON(t *testing.T) {
	var v struct{ T Type }
	if err := json.Unmarshal([]byte(`{"T":"critical"}`), &v); err != nil || v.T != Critical {
		t.Fatalf("unmarshal = %v, %v", v.T, err)
	}
	b, err := json.Marshal(v)
	if err != nil || string(b) != `{"T":"Critical"}` {
		t.Fatalf("marshal = %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`{"T":"nope"}`), &v); err == nil {
		t.Fatal("unmarshal of an unknown type succeeded")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		m       Message
		wantErr string // empty: valid
	}{
		{"ok", Message{Type: Info, Text: "hello"}, ""},
		{"max length", Message{Type: Info, Text: strings.Repeat("x", MaxTextBytes)}, ""},
		{"tab and unicode", Message{Type: Debug, Text: "a\tb é ✓"}, ""},
		{"zero type", Message{Text: "x"}, "not one of the message types"},
		{"bad type", Message{Type: 9, Text: "x"}, "not one of the message types"},
		{"empty", Message{Type: Info}, "empty"},
		{"too long", Message{Type: Info, Text: strings.Repeat("x", MaxTextBytes+1)}, "4097 bytes"},
		{"newline", Message{Type: Info, Text: "a\nb"}, "line break at byte 1"},
		{"carriage return", Message{Type: Info, Text: "ab\r"}, "line break at byte 2"},
		{"only newline", Message{Type: Info, Text: "\n"}, "line break at byte 0"},
		{"NUL", Message{Type: Info, Text: "a\x00b"}, "control character U+0000 at byte 1"},
		{"ESC of a title sequence", Message{Type: Info, Text: "x\x1b]0;owned\x07"}, "control character U+001B at byte 1"},
		{"BEL", Message{Type: Info, Text: "ding\a"}, "control character U+0007 at byte 4"},
		{"unit separator", Message{Type: Info, Text: "\x1f"}, "control character U+001F at byte 0"},
		{"DEL", Message{Type: Info, Text: "ab\x7f"}, "control character U+007F at byte 2"},
		{"C1 CSI", Message{Type: Info, Text: "é\u009b2J"}, "control character U+009B at byte 2"},
		{"first C1", Message{Type: Info, Text: "\u0080"}, "control character U+0080"},
		{"last C1", Message{Type: Info, Text: "\u009f"}, "control character U+009F"},
		{"first after C1", Message{Type: Info, Text: "\u00a0nbsp"}, ""},
		{"first problem wins", Message{Type: Info, Text: "a\x1bb\nc"}, "control character U+001B at byte 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v; want ErrInvalid containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAppendText(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		m    Message
		want string
	}{
		{"utc millis", Message{Type: Warning, Text: "disk almost full",
			Time: time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.UTC)},
			"2026-11-24T10:00:00.123Z [Warning] disk almost full"},
		{"zone converted", Message{Type: Request, Text: "ping",
			Time: time.Date(2026, 11, 24, 11, 0, 0, 0, paris)},
			"2026-11-24T10:00:00.000Z [Request] ping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(tt.m.AppendText([]byte("prefix:")))
			if got != "prefix:"+tt.want {
				t.Fatalf("AppendText = %q; want %q", got, "prefix:"+tt.want)
			}
			if s := tt.m.String(); s != tt.want {
				t.Fatalf("String = %q; want %q", s, tt.want)
			}
		})
	}
}

func TestIsControl(t *testing.T) {
	for r := rune(0); r < 0x200; r++ {
		want := r <= 0x1f && r != '\t' || r >= 0x7f && r <= 0x9f
		if got := IsControl(r); got != want {
			t.Errorf("IsControl(%U) = %v; want %v", r, got, want)
		}
	}
}

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text, tab\tand \\ kept", "plain text, tab\tand \\ kept"},
		{"\x1b]0;title\x07", `\x1b]0;title\x07`},
		{"\x1b[2J", `\x1b[2J`},
		{"a\x00b\r\n", `a\x00b\x0d\x0a`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b2J é ✓", `c1 \u009b2J é ✓`},
		{"stray \x9b byte \xff", `stray \x9b byte \xff`},
		{"replacement \uFFFD kept", "replacement \uFFFD kept"},
		{"cut \xe2\x9c", `cut \xe2\x9c`},
	}
	for _, tt := range tests {
		if got := Escape(tt.in); got != tt.want {
			t.Errorf("Escape(%q) = %q; want %q", tt.in, got, tt.want)
		}
		if got := string(AppendEscaped([]byte("p:"), []byte(tt.in))); got != "p:"+tt.want {
			t.Errorf("AppendEscaped(%q) = %q; want %q", tt.in, got, "p:"+tt.want)
		}
	}
}

// FuzzEscape checks that what Escape returns holds no control character
// and no invalid UTF-8, and that text needing no escape is unchanged.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "ok", "\x1b[2J", "\u009b", "\xff", "a\tb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Escape(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Escape(%q) = %q: invalid UTF-8", s, got)
		}
		for _, r := range got {
			if IsControl(r) {
				t.Fatalf("Escape(%q) = %q holds %U", s, got, r)
			}
		}
		if !strings.ContainsFunc(s, IsControl) && utf8.ValidString(s) && got != s {
			t.Fatalf("Escape(%q) = %q; want it unchanged", s, got)
		}
	})
}
