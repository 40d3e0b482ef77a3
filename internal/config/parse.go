package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"regexp"
	"slices"
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
	// badValues are the fields whose name is none of their values, by
	// path; each is reported where Validate finds the field invalid.
	badValues := map[string]Problem{}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&cfg)
	var te *yaml.TypeError
	switch {
	case errors.Is(err, io.EOF):
		problems = append(problems, Problem{Msg: "the file is empty; it needs at least \"version: 1\""})
	case err != nil && !errors.As(err, &te):
		// A syntax error: nothing after it can be trusted.
		return Config{}, &Error{File: name, Problems: []Problem{syntaxProblem(err, data)}}
	default:
		if te != nil {
			var root yaml.Node
			_ = yaml.Unmarshal(data, &root) // it parsed above, only types were wrong
			keys := keysOf(&root, "", nil)
			for _, msg := range te.Errors {
				p, ok := valueProblem(msg, keys)
				_, dup := badValues[p.Field]
				switch {
				case !ok:
					problems = append(problems, typeProblem(msg, keys))
				case p.Field == "":
					problems = append(problems, p)
				case !dup: // an alias can bring one bad value twice
					badValues[p.Field] = p
				}
			}
		}
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			line := extra.Line
			if err != nil {
				line = syntaxProblem(err, data).Line // a broken second document
			}
			problems = append(problems, Problem{Line: line, Msg: "a second YAML document (---) is not allowed; keep one document per file"})
		}
	}
	// yaml.Marshal writes a nil list as "[]", which decodes to an empty
	// one; both mean the built-in worker, so keep one form and let the
	// output of print-config parse back to an equal Config.
	if len(cfg.Pool.Command) == 0 {
		cfg.Pool.Command = nil
	}
	if len(cfg.NATS.URLs) == 0 {
		cfg.NATS.URLs = nil
	}
	if len(cfg.NATS.Embedded.Routes) == 0 {
		cfg.NATS.Embedded.Routes = nil
	}

	// Validate even when some fields failed to decode (they keep their
	// defaults), so that one run reports every problem in the file.
	// A document that is not a mapping was reported as such already;
	// validating its defaults would only add noise.
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root) // it decoded above, so it parses
	isMapping := len(root.Content) > 0 && root.Content[0].Kind == yaml.MappingNode
	if vps := cfg.Validate(); len(vps) > 0 && (isMapping || len(problems) == 0) {
		reported := make(map[string]bool, len(problems))
		for _, p := range problems {
			reported[p.Field] = true
		}
		for _, vp := range vps {
			if p, ok := badValues[vp.Field]; ok {
				problems = append(problems, p)
				delete(badValues, vp.Field)
				reported[vp.Field] = true
				continue
			}
			if reported[vp.Field] {
				continue
			}
			vp.Line = lineOf(&root, vp.Field)
			problems = append(problems, vp)
		}
	}
	// Validate finds every bad value invalid; should it miss one, it is
	// still reported.
	problems = append(problems, slices.SortedFunc(maps.Values(badValues), func(a, b Problem) int { return a.Line - b.Line })...)
	if len(problems) > 0 {
		return Config{}, &Error{File: name, Problems: problems}
	}
	return cfg, nil
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// parserErrors are the yaml.v3 messages raised by its parser rather than its
// scanner. yaml.v3 (v3.0.1) reports their line 0-based, one too low, and
// leaves it out when the error is on the first line.
var parserErrors = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found undefined tag handle":             true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// syntaxProblem turns a yaml.v3 syntax error in data into a Problem with
// the line the error is on.
func syntaxProblem(err error, data []byte) Problem {
	p := Problem{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Msg = m[2]
	}
	if parserErrors[p.Msg] {
		p.Line++
	}
	// An unexpected end of the file is reported on the line after the
	// last newline; point at the last line instead.
	if last := bytes.Count(bytes.TrimRight(data, "\n"), []byte("\n")) + 1; p.Line > last {
		p.Line = last
	}
	return p
}

// keyAt is one key of a decoded file, or an element of a list, with the
// dotted path of the field it sets.
type keyAt struct {
	path  string
	elem  bool       // value is an element of the list at path
	key   *yaml.Node // nil for list elements and the document itself
	value *yaml.Node
}

// keysOf lists the keys and list elements under n in document order.
func keysOf(n *yaml.Node, path string, into []keyAt) []keyAt {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			into = append(into, keyAt{path: path, value: c})
			into = keysOf(c, path, into)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			into = append(into, keyAt{path: path, elem: true, value: c})
			into = keysOf(c, path, into)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			into = append(into, keyAt{path: p, key: k, value: v})
			into = keysOf(v, p, into)
		}
	}
	return into
}

// badValue is the error of an UnmarshalYAML given a scalar that is none
// of the names of zero's type. It is a *yaml.TypeError, so that decoding
// goes on; Parse finds the field by the node's position and type and
// reports msg where Validate checks the field, which UnmarshalYAML leaves
// invalid (zero).
func badValue(n *yaml.Node, zero any, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: column %d: bad %T: %s", n.Line, n.Column, zero, msg)}}
}

var badValueRE = regexp.MustCompile(`(?s)^line (\d+): column (\d+): bad (\S+): (.*)$`)

// valueProblem turns a badValue message into a Problem of the field it is
// for, found among keys by the position and Go type of its value.
func valueProblem(msg string, keys []keyAt) (Problem, bool) {
	m := badValueRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{}, false
	}
	line, _ := strconv.Atoi(m[1])
	column, _ := strconv.Atoi(m[2])
	for _, k := range keys {
		v := k.value
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if k.key != nil && v.Line == line && v.Column == column && goType(k.path, false) == m[3] {
			return Problem{Line: k.key.Line, Field: k.path, Msg: m[4]}, true
		}
	}
	return Problem{Line: line, Msg: m[4]}, true
}

var (
	unknownRE   = regexp.MustCompile(`^field (.*) not found in type (\S+)$`)
	duplicateRE = regexp.MustCompile(`^mapping key "(.*)" already defined at line (\d+)$`)
	typeRE      = regexp.MustCompile("^cannot unmarshal (\\S+)(?: `(.*)`)? into (.+)$")
)

// typeProblem turns one of yaml.v3's "line N: ..." decoding messages into a
// Problem naming the field, found among keys by line, and what to write.
func typeProblem(msg string, keys []keyAt) Problem {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	p := Problem{Line: line, Msg: m[2]}

	// keyNamed finds the path of the key name on the problem's line, in a
	// section of Go type section unless that is empty.
	keyNamed := func(name, section string) (string, bool) {
		for _, k := range keys {
			if k.key == nil || k.key.Line != line || k.key.Value != name {
				continue
			}
			parent, _, _ := cutLast(k.path)
			if section == "" || goType(parent, false) == section {
				return k.path, true
			}
		}
		return "", false
	}
	if m := unknownRE.FindStringSubmatch(p.Msg); m != nil {
		if path, ok := keyNamed(m[1], m[2]); ok {
			p.Field = path
			where := "at the top level"
			if section, _, nested := cutLast(path); nested {
				where = "in " + section
			}
			p.Msg = "unknown field " + strconv.Quote(m[1]) + " " + where + "; check the spelling against configs/chattyd.yaml"
		} else {
			section := strings.ToLower(strings.TrimPrefix(m[2], "config."))
			p.Msg = "unknown field " + strconv.Quote(m[1]) + " in " + section + "; check the spelling against configs/chattyd.yaml"
		}
		return p
	}
	if m := duplicateRE.FindStringSubmatch(p.Msg); m != nil {
		p.Field, _ = keyNamed(m[1], "")
		p.Msg = "already defined at line " + m[2] + "; keep only one"
		return p
	}
	m = typeRE.FindStringSubmatch(p.Msg)
	if m == nil {
		return p
	}
	tag, value, typ := m[1], m[2], m[3]
	// yaml.v3 cuts values longer than 10 bytes to 7 and "...".
	prefix, cut := strings.CutSuffix(value, "...")
	if !cut || len(prefix) != 7 {
		prefix = value
	}
	// Several values can start on one line ("pool: {command: [a, {b: c}]}");
	// the one meant has the value and the Go type yaml.v3 names.
	best := -1
	for i, k := range keys {
		v := k.value
		if v.Line != line || v.ShortTag() != tag || !strings.HasPrefix(v.Value, prefix) || (!cut && v.Value != value) {
			continue
		}
		if best < 0 {
			best = i
		}
		if decodedType(k.path, k.elem) == typ {
			best = i
			break
		}
	}
	if best >= 0 {
		p.Field = keys[best].path
	}

	got := "a " + strings.TrimPrefix(tag, "!!")
	switch tag {
	case "!!map":
		got = "a mapping"
	case "!!seq":
		got = "a list"
	}
	if value != "" {
		if best >= 0 && len(keys[best].value.Value) <= 40 {
			value = keys[best].value.Value // yaml.v3 shortened it
		}
		got = strconv.Quote(value)
	}
	switch {
	case typ == "time.Duration":
		p.Msg = "must be a duration with a unit, such as 60s, 1m30s or 500ms; got " + got
	case typ == "string":
		p.Msg = "must be a string, got " + got
	case typ == "[]string":
		p.Msg = "must be a list of strings, such as [chatty_server, -child, \"{port}\"]; got " + got
	case strings.HasPrefix(typ, "int"), strings.HasPrefix(typ, "uint"):
		p.Msg = "must be a whole number, got " + got
	case typ == "config.Config":
		p.Msg = "the file must be a YAML mapping of keys, starting with \"version: 1\"; got " + got
	case strings.HasPrefix(typ, "config."):
		p.Msg = "must be a mapping of keys, got " + got
	}
	return p
}

// cutLast splits a dotted path before its last key.
func cutLast(path string) (parent, key string, nested bool) {
	i := strings.LastIndexByte(path, '.')
	if i < 0 {
		return "", path, false
	}
	return path[:i], path[i+1:], true
}

// decodedType is goType, but string for a typed value (values.go): its
// UnmarshalYAML decodes a string first, and yaml.v3's errors name that.
func decodedType(path string, elem bool) string {
	t := fieldType(path, elem)
	if t != nil && reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return "string"
	}
	return goType(path, elem)
}

// goType names the Go type of the field at the dotted path, or of its
// elements when elem is set, as yaml.v3 names it in errors; "" if unknown.
func goType(path string, elem bool) string {
	if t := fieldType(path, elem); t != nil {
		return t.String()
	}
	return ""
}

// fieldType returns the Go type of the field at the dotted path, or of its
// elements when elem is set; nil if there is none.
func fieldType(path string, elem bool) reflect.Type {
	t := reflect.TypeFor[Config]()
	if path != "" {
		for _, name := range strings.Split(path, ".") {
			f, ok := fieldByKey(t, name)
			if !ok {
				return nil
			}
			t = f.Type
		}
	}
	if elem {
		if t.Kind() != reflect.Slice {
			return nil
		}
		t = t.Elem()
	}
	return t
}

// setting is one leaf of Config: a key that holds a value, not a section.
type setting struct {
	path  string // its YAML path, such as broadcast.tls.listen
	index []int  // its field, for reflect.Value.FieldByIndex
}

// settings returns every leaf of Config in declaration order.
func settings() []setting {
	var out []setting
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for f := range t.Fields() {
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			i := append(append([]int(nil), index...), f.Index...)
			switch {
			case opts == "inline":
				walk(f.Type, prefix, i)
			case f.Type.Kind() == reflect.Struct:
				walk(f.Type, prefix+name+".", i)
			default:
				out = append(out, setting{prefix + name, i})
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
}

// fieldByKey returns the field of struct type t that the YAML key sets,
// looking into the structs t inlines.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			if inner, ok := fieldByKey(f.Type, key); ok {
				return inner, true
			}
		} else if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
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
