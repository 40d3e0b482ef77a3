package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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
	if err := SetFormat(l, "json", false); err != nil {
		t.Fatal(err)
	}
	l.WithField(FieldConnection, 7).Info("hello")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	if m["msg"] != "hello" || m["connection"] != float64(7) || m["time"] == nil {
		t.Errorf("fields: %v", m)
	}
	if err := SetFormat(l, "xml", false); err == nil {
		t.Error("an unknown format was accepted")
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
