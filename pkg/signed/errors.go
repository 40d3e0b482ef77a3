package signed

import (
	"errors"
	"fmt"
)

// Reason is why a frame was rejected.
type Reason uint8

// The reasons for rejecting a frame.
const (
	ReasonMalformed       Reason = iota + 1 // bad magic, unknown kind, wrong body size, invalid field
	ReasonOversized                         // body or payload over the limit
	ReasonBadDigest                         // the carried digest is not the digest of the fields
	ReasonBadChain                          // a chained message or checkpoint does not extend the verified chain
	ReasonBadSignature                      // the Ed25519 signature does not verify
	ReasonReplay                            // sequence number repeated or going backwards
	ReasonGap                               // sequence number skipping ahead: messages are missing
	ReasonTimestamp                         // timestamp outside the window around the verifier's clock
	ReasonUnexpected                        // a frame kind not allowed here (no ANCHOR first, wrong mode, ...)
	ReasonPendingOverflow                   // too many chained messages without a checkpoint
	ReasonTruncated                         // the stream ended inside a frame
	ReasonUncovered                         // the stream ended with chained messages no checkpoint covered
	ReasonUnauthorized                      // an upstream message from a key that is not authorized
	numReasons
)

var reasonErrs = [numReasons]error{
	ReasonMalformed:       errors.New("malformed frame"),
	ReasonOversized:       errors.New("oversized frame"),
	ReasonBadDigest:       errors.New("bad digest"),
	ReasonBadChain:        errors.New("bad chain"),
	ReasonBadSignature:    errors.New("bad signature"),
	ReasonReplay:          errors.New("sequence repeated or going backwards"),
	ReasonGap:             errors.New("sequence gap"),
	ReasonTimestamp:       errors.New("timestamp outside the window"),
	ReasonUnexpected:      errors.New("unexpected frame"),
	ReasonPendingOverflow: errors.New("too many messages awaiting a checkpoint"),
	ReasonTruncated:       errors.New("stream ends inside a frame"),
	ReasonUncovered:       errors.New("stream ends before a checkpoint covers its last messages"),
	ReasonUnauthorized:    errors.New("key not authorized"),
}

// The sentinel errors that a *RejectError of each reason wraps, for
// errors.Is.
var (
	ErrMalformed       = reasonErrs[ReasonMalformed]
	ErrOversized       = reasonErrs[ReasonOversized]
	ErrBadDigest       = reasonErrs[ReasonBadDigest]
	ErrBadChain        = reasonErrs[ReasonBadChain]
	ErrBadSignature    = reasonErrs[ReasonBadSignature]
	ErrReplay          = reasonErrs[ReasonReplay]
	ErrGap             = reasonErrs[ReasonGap]
	ErrTimestamp       = reasonErrs[ReasonTimestamp]
	ErrUnexpected      = reasonErrs[ReasonUnexpected]
	ErrPendingOverflow = reasonErrs[ReasonPendingOverflow]
	ErrTruncated       = reasonErrs[ReasonTruncated]
	ErrUncovered       = reasonErrs[ReasonUncovered]
	ErrUnauthorized    = reasonErrs[ReasonUnauthorized]
)

var reasonNames = [numReasons]string{
	ReasonMalformed:       "malformed",
	ReasonOversized:       "oversized",
	ReasonBadDigest:       "bad_digest",
	ReasonBadChain:        "bad_chain",
	ReasonBadSignature:    "bad_signature",
	ReasonReplay:          "replay",
	ReasonGap:             "gap",
	ReasonTimestamp:       "timestamp",
	ReasonUnexpected:      "unexpected",
	ReasonPendingOverflow: "pending_overflow",
	ReasonTruncated:       "truncated",
	ReasonUncovered:       "uncovered",
	ReasonUnauthorized:    "unauthorized",
}

// String returns a short name fit for a metric label, such as "bad_signature".
func (r Reason) String() string {
	if r == 0 || r >= numReasons {
		return fmt.Sprintf("Reason(%d)", uint8(r))
	}
	return reasonNames[r]
}

// Reasons returns every reason, for counters.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ReasonMalformed; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// RejectError says which frame was rejected and why. It wraps the
// reason's sentinel error (ErrBadSignature, ...).
type RejectError struct {
	Reason Reason
	Kind   Kind   // the frame's kind; 0 when it could not be read
	Seq    uint64 // the frame's sequence number, when it has one
	Offset int64  // the frame's position in the stream
	Detail string
}

func (e *RejectError) Error() string {
	msg := fmt.Sprintf("signed: %v: frame at byte %d", e.Unwrap(), e.Offset)
	if e.Kind != 0 {
		msg += " (" + e.Kind.String()
		if e.Seq != 0 {
			msg += fmt.Sprintf(" seq %d", e.Seq)
		}
		msg += ")"
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap returns the reason's sentinel error.
func (e *RejectError) Unwrap() error {
	if e.Reason == 0 || e.Reason >= numReasons {
		return errors.New("rejected")
	}
	return reasonErrs[e.Reason]
}

// ReasonOf returns the reason of a *RejectError in err's chain, or 0.
func ReasonOf(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return 0
}
