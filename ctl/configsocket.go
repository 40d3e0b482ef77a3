package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/chatty-dev/chatty/internal/config"
	"gopkg.in/yaml.v3"
)

// configSocket reads control.socket from a chattyd configuration file.
// chattyctl needs nothing else from it, so the rest may be invalid (after
// a reload chattyd rejected, say): that is worth a warning, not a refusal.
// It returns "" when the file names no socket.
func configSocket(path string, warn io.Writer) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("--config %s: no such file", path)
		}
		return "", fmt.Errorf("--config: %w", err)
	}
	var doc struct {
		Control struct {
			Socket string `yaml:"socket"`
		} `yaml:"control"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("--config %s: cannot read control.socket from it: %w", path, err)
	}
	if _, err := config.Parse(path, data); err != nil {
		fmt.Fprintf(warn, "chattyctl: warning: chattyd would refuse %s (%v); using only its control.socket\n", path, firstLine(err))
	}
	return doc.Control.Socket, nil
}

// firstLine is err's message up to its first line break.
func firstLine(err error) string {
	if line, _, more := strings.Cut(err.Error(), "\n"); more {
		return line + " ..."
	}
	return err.Error()
}
