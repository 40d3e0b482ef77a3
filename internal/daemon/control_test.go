package daemon

import (
	"testing"

	"github.com/chatty-dev/chatty/pkg/message"
	"github.com/sirupsen/logrus"
)

// A sent message is logged at its type's level.
func TestLogLevel(t *testing.T) {
	want := map[message.Type]logrus.Level{
		message.Request:  logrus.InfoLevel,
		message.Response: logrus.InfoLevel,
		message.Critical: logrus.ErrorLevel,
		message.Info:     logrus.InfoLevel,
		message.Warning:  logrus.WarnLevel,
		message.Debug:    logrus.DebugLevel,
		message.Error:    logrus.ErrorLevel,
	}
	for typ, lvl := range want {
		if got := logLevel(typ); got != lvl {
			t.Errorf("logLevel(%v) = %v; want %v", typ, got, lvl)
		}
	}
}
