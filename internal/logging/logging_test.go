package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

func TestTextFormatLikeTheOriginal(t *testing.T) {
	tests := []struct {
		name   string
		fields logrus.Fields
		level  logrus.Level
		msg    string
		want   string
	}{
		{"connection", logrus.Fields{FieldConnection: 3, FieldComponent: "broadcast"}, logrus.InfoLevel, "New connection established", "[INFO] [connection: 3] New connection established\n"},
		{"process", logrus.Fields{FieldProcess: 4}, logrus.InfoLevel, "Process terminated (exited with code 2) and was restarted", "[INFO] [process: 4] Process terminated (exited with code 2) and was restarted\n"},
		{"scope", logrus.Fields{FieldScope: "stdin"}, logrus.DebugLevel, "Received: x", "[DEBUG] [stdin] Received: x\n"},
		{"warning and fields", logrus.Fields{"reason": "slow consumer", "n": 2, "error": errors.New("boom")}, logrus.WarnLevel, "closed", "[WARNING] closed reason=\"slow consumer\" error=boom n=2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &logrus.Entry{Data: tt.fields, Level: tt.level, Message: tt.msg, Time: time.Date(2026, 11, 24, 1, 2, 3, 4e6, time.UTC)}
			got, err := (&TextFormatter{NoTime: true}).Format(e)
			if err != nil || string(got) != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
			stamped, _ := (&TextFormatter{}).Format(e)
			if want := "2026-11-24 01:02:03.004 " + tt.want; string(stamped) != want {
				t.Errorf("with time: got %q, want %q", stamped, want)
			}
		})
	}
}

func TestJSONFormat(t *testing.T) {
	l := logrus.New()
	var buf bytes.Buffer
	l.SetOutput(&buf)
	l.SetFormatter(NewFormatter(true, false))
	l.WithField(FieldConnection, 7).Info("hello")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	if m["msg"] != "hello" || m["connection"] != float64(7) || m["time"] == nil {
		t.Errorf("fields: %v", m)
	}
}

// A feed line or a client's line in a log line must not drive the
// terminal the log is read on: no control byte goes out raw, in either
// format, whether in the message or in a field.
func TestFormatsEscapeControls(t *testing.T) {
	const hostile = "\x1b]0;owned\x07 \x1b[2J nul\x00 del\x7f csi\u009b stray\x9b tab\tok é"
	raw := func(b []byte) (int, bool) {
		for i, c := range b {
			if c == '\n' && i == len(b)-1 {
				continue
			}
			if c < 0x20 && c != '\t' || c == 0x7f || c == 0xc2 && i+1 < len(b) && b[i+1] >= 0x80 && b[i+1] <= 0x9f || c == 0x9b && (i == 0 || b[i-1] != 0xc2) {
				return i, true
			}
		}
		return 0, false
	}
	e := &logrus.Entry{Data: logrus.Fields{FieldScope: "stdin", "line": "a\x1bb"}, Level: logrus.DebugLevel,
		Message: "Received: " + hostile, Time: time.Date(2026, 11, 24, 1, 2, 3, 4e6, time.UTC)}
	text, err := (&TextFormatter{NoTime: true}).Format(e)
	if err != nil {
		t.Fatal(err)
	}
	if i, ok := raw(text); ok {
		t.Errorf("text line holds a raw control byte at %d: %q", i, text)
	}
	const want = `[DEBUG] [stdin] Received: \x1b]0;owned\x07 \x1b[2J nul\x00 del\x7f csi\u009b stray\x9b tab` + "\tok é" + ` line="a\x1bb"` + "\n"
	if string(text) != want {
		t.Errorf("text line\n%q\nwant\n%q", text, want)
	}

	l := logrus.New()
	var buf bytes.Buffer
	l.SetOutput(&buf)
	l.SetFormatter(NewFormatter(true, false))
	l.SetLevel(logrus.DebugLevel)
	l.WithField("line", "a\u009bb\x7f").Debug("Received: " + hostile)
	if i, ok := raw(buf.Bytes()); ok {
		t.Errorf("JSON line holds a raw control byte at %d: %q", i, buf.Bytes())
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	// encoding/json makes the stray byte U+FFFD; the rest reads back.
	if want := "Received: " + strings.Replace(hostile, "stray\x9b", "stray\uFFFD", 1); m["msg"] != want {
		t.Errorf("msg = %q; want %q", m["msg"], want)
	}
	if m["line"] != "a\u009bb\x7f" {
		t.Errorf("line = %q", m["line"])
	}
}

// UnderJournal is true only when JOURNAL_STREAM names this process's own
// stderr, as systemd sets it.
func TestUnderJournal(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Fstat(int(os.Stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !UnderJournal() {
		t.Error("JOURNAL_STREAM naming stderr was not recognised")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1))
	if UnderJournal() {
		t.Error("JOURNAL_STREAM naming another file was taken for stderr")
	}
	t.Setenv("JOURNAL_STREAM", "garbage")
	if UnderJournal() {
		t.Error("a malformed JOURNAL_STREAM was accepted")
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]logrus.Level{"debug": logrus.DebugLevel, "info": logrus.InfoLevel, "warning": logrus.WarnLevel, "warn": logrus.WarnLevel, "error": logrus.ErrorLevel} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("ParseLevel accepted loud")
	}
}

func TestFileReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, "one")
	os.Rename(path, path+".1")
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "two")
	got, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + ".1")
	if string(got) != "two\n" || string(old) != "one\n" {
		t.Errorf("new %q, rotated %q", got, old)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %o", st.Mode().Perm())
	}
	if !regexp.MustCompile(`^two`).Match(got) {
		t.Error("unexpected content")
	}
}
