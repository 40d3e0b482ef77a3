package controlserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatty-dev/chatty/pkg/message"
)

// decodeError is a request that cannot be decoded or is not valid; its
// message is shown to the client.
type decodeError struct {
	status int
	msg    string
}

func (e *decodeError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &decodeError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func writeDecodeError(w http.ResponseWriter, err error) {
	var de *decodeError
	if errors.As(err, &de) {
		writeError(w, de.status, de.msg)
		return
	}
	writeError(w, http.StatusBadRequest, err.Error())
}

// decodeStrict decodes exactly one JSON object from r into v, and explains
// what is wrong in terms a user can act on. Stricter than encoding/json, it
// refuses a key that appears twice (encoding/json would keep the last) and
// any key that is not exactly one of fields (encoding/json would match
// "Type" or "TYPE" to "type").
func decodeStrict(r io.Reader, v any, fields ...string) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return explain(err)
	}
	// First the syntax, and that there is one value only, so that the
	// walk over the keys meets valid JSON.
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return explain(err)
	}
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return explain(err)
	default:
		return badRequest("the body must hold a single JSON object; found more after it")
	}
	if err := checkKeys(data, fields); err != nil {
		return err
	}
	dec = json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return explain(err)
	}
	return nil
}

// checkKeys walks the object in data, valid JSON, and refuses a key that
// is not one of fields, compared byte for byte, or that appears twice. Its
// errors name the key and its byte offset in data. A value that is not an
// object is left for the decoder to refuse.
func checkKeys(data []byte, fields []string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return explain(err)
		}
		key, _ := tok.(string)
		// Between the previous token and the key are only spaces and a
		// comma: the key starts at the first quote.
		at := before + int64(bytes.IndexByte(data[before:], '"'))
		switch {
		case seen[key]:
			return badRequest("duplicate key %q at byte %d: each field may appear once", key, at)
		case !slices.Contains(fields, key):
			return badRequest("unknown field %q at byte %d: %s", key, at, fieldList(fields))
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return explain(err)
		}
	}
	return nil
}

// fieldList says which fields a request takes.
func fieldList(fields []string) string {
	if len(fields) == 0 {
		return "this request takes no field"
	}
	q := make([]string, len(fields))
	for i, f := range fields {
		q[i] = strconv.Quote(f)
	}
	return "the fields are " + strings.Join(q, " and ") + ", in lower case"
}

func explain(err error) error {
	var (
		syn   *json.SyntaxError
		typ   *json.UnmarshalTypeError
		large *http.MaxBytesError
	)
	switch {
	case errors.As(err, &large):
		return &decodeError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("the body is larger than %d bytes", large.Limit)}
	case errors.Is(err, io.EOF):
		return badRequest("the body is empty; it must be a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON: the body ends too early")
	case errors.As(err, &syn):
		return badRequest("malformed JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("the body must be a JSON object, not %s", typ.Value)
		}
		return badRequest("field %q must be %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	// Other decoder complaints are readable as they are.
	return badRequest("%v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "uint64":
		return "a whole number"
	case "string":
		return "a string"
	}
	return goKind
}

// sendBody mirrors SendRequest with pointers, to tell missing from empty.
type sendBody struct {
	Type    *string `json:"type"`
	Message *string `json:"message"`
}

// decodeSend reads a SendRequest and returns the message it asks for,
// stamped with now and validated.
func decodeSend(r io.Reader, now time.Time) (message.Message, error) {
	var b sendBody
	if err := decodeStrict(r, &b, "type", "message"); err != nil {
		return message.Message{}, err
	}
	if b.Type == nil {
		return message.Message{}, badRequest(`field "type" is required`)
	}
	if b.Message == nil {
		return message.Message{}, badRequest(`field "message" is required`)
	}
	t, err := message.ParseType(*b.Type)
	if err != nil {
		return message.Message{}, badRequest("%v", err)
	}
	m := message.Message{Type: t, Text: *b.Message, Time: now}
	if err := m.Validate(); err != nil {
		return message.Message{}, badRequest("%v", err)
	}
	return m, nil
}

// scaleBody mirrors ScaleRequest with a pointer: a missing "workers" must
// not mean zero.
type scaleBody struct {
	Workers *int `json:"workers"`
}

// decodeScale reads a ScaleRequest and returns its number of workers,
// checked to be within 0..max.
func decodeScale(r io.Reader, max int) (int, error) {
	var b scaleBody
	if err := decodeStrict(r, &b, "workers"); err != nil {
		return 0, err
	}
	if b.Workers == nil {
		return 0, badRequest(`field "workers" is required`)
	}
	if n := *b.Workers; n < 0 || n > max {
		return 0, badRequest("workers: want a whole number from 0 to %d, got %d", max, n)
	}
	return *b.Workers, nil
}

// retryBody mirrors RetryRequest with a pointer: a missing "seq" must not
// mean zero.
type retryBody struct {
	Seq *uint64 `json:"seq"`
}

// decodeRetry reads a RetryRequest and returns its sequence number, at
// least 1.
func decodeRetry(r io.Reader) (uint64, error) {
	var b retryBody
	if err := decodeStrict(r, &b, "seq"); err != nil {
		return 0, err
	}
	if b.Seq == nil {
		return 0, badRequest(`field "seq" is required: the sequence number of a dead letter (chattyctl deadletters lists them)`)
	}
	if *b.Seq == 0 {
		return 0, badRequest("seq: sequence numbers start at 1, got 0")
	}
	return *b.Seq, nil
}

// decodeEmpty accepts an empty body or an empty JSON object.
func decodeEmpty(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return explain(err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return decodeStrict(bytes.NewReader(data), &struct{}{})
}
