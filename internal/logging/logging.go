// Package logging builds chattyd's logrus loggers: a text format shaped like
// the original server's ("[INFO] [connection: 3] New connection established"),
// a JSON format, journal awareness and a reopenable log file.
//
// Both formats write no control character raw: log lines quote feed lines
// and clients' lines, which are anybody's bytes, and a log read on a
// terminal must not drive it. The text format escapes them in the message
// (message.AppendEscaped: "\x1b") and quotes a field that holds one; the
// JSON format writes them as \u escapes.
package logging

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/chatty-dev/chatty/pkg/message"
)

// Scope fields are rendered as a bracketed prefix in the text format, in
// this order, the way the original server tagged its lines.
const (
	FieldConnection = "connection" // [connection: 3]
	FieldProcess    = "process"    // [process: 4]
	FieldScope      = "scope"      // [stdin], [feed], [control]
	FieldComponent  = "component"  // package that logged; JSON only
)

// TextFormatter renders entries as "TIME [LEVEL] [scope] message k=v",
// control characters escaped.
type TextFormatter struct {
	// NoTime drops the timestamp, for the journal, which adds its own.
	NoTime bool
}

// Format implements logrus.Formatter.
func (f *TextFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var b bytes.Buffer
	if !f.NoTime {
		b.WriteString(e.Time.Format("2006-01-02 15:04:05.000 "))
	}
	b.WriteByte('[')
	b.WriteString(levelName(e.Level))
	b.WriteString("] ")
	if v, ok := e.Data[FieldConnection]; ok {
		fmt.Fprintf(&b, "[connection: %v] ", v)
	}
	if v, ok := e.Data[FieldProcess]; ok {
		fmt.Fprintf(&b, "[process: %v] ", v)
	}
	if v, ok := e.Data[FieldScope]; ok {
		fmt.Fprintf(&b, "[%v] ", v)
	}
	b.Write(message.AppendEscaped(nil, []byte(e.Message)))
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		switch k {
		case FieldConnection, FieldProcess, FieldScope, FieldComponent:
			continue
		}
		keys = append(keys, k)
	}
	// Fields in name order, but a reason first: it says most.
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == "reason") != (keys[j] == "reason") {
			return keys[i] == "reason"
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		v := e.Data[k]
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		s := fmt.Sprint(v)
		if strings.ContainsAny(s, " \t\"=") || s == "" || message.Escape(s) != s {
			s = fmt.Sprintf("%q", s)
		}
		fmt.Fprintf(&b, " %s=%s", k, s)
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

func levelName(l logrus.Level) string {
	switch l {
	case logrus.WarnLevel:
		return "WARNING"
	case logrus.PanicLevel, logrus.FatalLevel:
		return "ERROR"
	}
	return strings.ToUpper(l.String())
}

// ParseLevel accepts debug, info, warning (or warn) and error.
func ParseLevel(s string) (logrus.Level, error) {
	switch s {
	case "debug":
		return logrus.DebugLevel, nil
	case "info", "":
		return logrus.InfoLevel, nil
	case "warning", "warn":
		return logrus.WarnLevel, nil
	case "error":
		return logrus.ErrorLevel, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warning or error)", s)
}

// UnderJournal reports whether stderr is connected to the systemd journal,
// following systemd's JOURNAL_STREAM convention.
func UnderJournal() bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(js, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	return stderrIs(dev, ino)
}

// jsonFormatter is logrus's JSON format with DEL and the C1 controls
// escaped too: encoding/json escapes only U+0000 to U+001F.
type jsonFormatter struct{ logrus.JSONFormatter }

// Format implements logrus.Formatter.
func (f *jsonFormatter) Format(e *logrus.Entry) ([]byte, error) {
	b, err := f.JSONFormatter.Format(e)
	if err != nil {
		return nil, err
	}
	return escapeJSONControls(b), nil
}

// escapeJSONControls rewrites DEL and the C1 controls (UTF-8 C2 80 to
// C2 9F) in b, JSON that encoding/json wrote, as \u escapes. They can only
// be inside strings, where the escape means the same character; a C2 byte
// always leads a character in the valid UTF-8 encoding/json writes.
func escapeJSONControls(b []byte) []byte {
	const hex = "0123456789abcdef"
	i := bytes.IndexFunc(b, func(r rune) bool { return r >= 0x7f && r <= 0x9f })
	if i < 0 {
		return b
	}
	out := append(make([]byte, 0, len(b)+16), b[:i]...)
	for i < len(b) {
		switch c := b[i]; {
		case c == 0x7f:
			out = append(out, `\u007f`...)
			i++
		case c == 0xc2 && i+1 < len(b) && b[i+1] >= 0x80 && b[i+1] <= 0x9f:
			out = append(out, '\\', 'u', '0', '0', hex[b[i+1]>>4], hex[b[i+1]&0xf])
			i += 2
		default:
			out = append(out, c)
			i++
		}
	}
	return out
}

// NewFormatter returns chattyd's formatter: JSON objects if json, else
// text lines. Under the journal, which stamps every line, neither writes
// the time.
func NewFormatter(json, journal bool) logrus.Formatter {
	if json {
		return &jsonFormatter{logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano, DisableTimestamp: journal}}
	}
	return &TextFormatter{NoTime: journal}
}

// File is a log destination that can be reopened, for logrotate. It is safe
// for concurrent use; the zero value is not usable, see OpenFile.
type File struct {
	path string

	mu sync.Mutex // guards f
	f  *os.File
}

// OpenFile opens (creating with mode 0640) the log file at path for appending.
func OpenFile(path string) (*File, error) {
	lf := &File{path: path}
	if err := lf.Reopen(); err != nil {
		return nil, err
	}
	return lf, nil
}

// Reopen closes and reopens the file at the same path, so that a file moved
// away by logrotate is replaced by a fresh one.
func (lf *File) Reopen() error {
	f, err := os.OpenFile(lf.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	lf.mu.Lock()
	old := lf.f
	lf.f = f
	lf.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Write implements io.Writer.
func (lf *File) Write(p []byte) (int, error) {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	return lf.f.Write(p)
}

// Close closes the file.
func (lf *File) Close() error {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	return lf.f.Close()
}

// Discard returns a logger that writes nothing, for tests and tools.
func Discard() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
