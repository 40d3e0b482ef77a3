package config

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parse decodes data strictly over the defaults and validates the result.
// name is used in errors only. Every problem is reported at once.
func Parse(name string, data []byte) (Config, error) {
	cfg := Default()
	cfg.Version = 0 // the file must say which version it is
	var problems []Problem

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&cfg)
	switch {
	case errors.Is(err, io.EOF):
		problems = append(problems, Problem{Msg: "the file is empty; it needs at least \"version: 1\""})
	case err != nil:
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			// A syntax error: nothing after it can be trusted.
			return Config{}, &Error{File: name, Problems: []Problem{syntaxProblem(err)}}
		}
		for _, msg := range te.Errors {
			problems = append(problems, typeProblem(msg))
		}
	default:
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			problems = append(problems, Problem{Line: extra.Line, Msg: "a second YAML document (---) is not allowed; keep one document per file"})
		}
	}
	if len(problems) > 0 {
		return Config{}, &Error{File: name, Problems: problems}
	}

	if vps := cfg.Validate(); len(vps) > 0 {
		var root yaml.Node
		_ = yaml.Unmarshal(data, &root) // it decoded above, so it parses
		for i := range vps {
			vps[i].Line = lineOf(&root, vps[i].Field)
		}
		return Config{}, &Error{File: name, Problems: vps}
	}
	return cfg, nil
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

func syntaxProblem(err error) Problem {
	return typeProblem(err.Error())
}

// typeProblem turns one of yaml.v3's "line N: ..." messages into a Problem.
func typeProblem(msg string) Problem {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	text := m[2]
	// "field lisen not found in type config.Broadcast" reads better as:
	if f, ok := strings.CutPrefix(text, "field "); ok {
		if name, typ, ok := strings.Cut(f, " not found in type "); ok {
			section := strings.ToLower(strings.TrimPrefix(typ, "config."))
			text = "unknown field " + strconv.Quote(name) + " in " + section + " (check the spelling against configs/chattyd.yaml)"
		}
	}
	return Problem{Line: line, Msg: text}
}

// lineOf finds the line of the key named by a dotted path, or of its
// nearest present parent; 0 when even the first key is absent.
func lineOf(root *yaml.Node, field string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, key := range strings.Split(field, ".") {
		if n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line = n.Content[i].Line
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}
