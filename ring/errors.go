package ring

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/vccl/vccl/gradcodec"
)

// ErrorCode names the class of a failure that travels around the ring in a
// KindAbort message, so that every rank can rebuild an error that
// errors.Is-matches the original sentinel.
type ErrorCode uint8

// Error codes carried by abort messages.
const (
	CodeOther              ErrorCode = iota // no known sentinel
	CodeNonFinite                           // gradcodec.ErrNonFinite
	CodeBadFrame                            // gradcodec.ErrBadFrame
	CodeCodecShape                          // gradcodec.ErrShapeMismatch
	CodeUnknownCodec                        // gradcodec.ErrUnknownCodec
	CodeBackendUnavailable                  // gradcodec.ErrBackendUnavailable
	CodeShapeMismatch                       // ErrShapeMismatch
	CodeProtocol                            // ErrProtocol
	CodePeerLost                            // ErrPeerLost (with the lost rank)
	CodeCanceled                            // context.Canceled
	CodeDeadline                            // context.DeadlineExceeded
	CodeTimeout                             // ErrTimeout (with the absent rank)
	numCodes
)

// sentinel returns the error a code stands for, or nil for CodeOther.
func (c ErrorCode) sentinel() error {
	switch c {
	case CodeNonFinite:
		return gradcodec.ErrNonFinite
	case CodeBadFrame:
		return gradcodec.ErrBadFrame
	case CodeCodecShape:
		return gradcodec.ErrShapeMismatch
	case CodeUnknownCodec:
		return gradcodec.ErrUnknownCodec
	case CodeBackendUnavailable:
		return gradcodec.ErrBackendUnavailable
	case CodeShapeMismatch:
		return ErrShapeMismatch
	case CodeProtocol:
		return ErrProtocol
	case CodePeerLost:
		return ErrPeerLost
	case CodeCanceled:
		return context.Canceled
	case CodeDeadline:
		return context.DeadlineExceeded
	case CodeTimeout:
		return ErrTimeout
	}
	return nil
}

// classify returns the code of err and, for a lost peer, its rank (else -1).
func classify(err error) (ErrorCode, int) {
	var pl *PeerLostError
	if errors.As(err, &pl) {
		return CodePeerLost, pl.Rank
	}
	var te *TimeoutError
	if errors.As(err, &te) {
		return CodeTimeout, te.Absent
	}
	for c := ErrorCode(1); c < numCodes; c++ {
		if errors.Is(err, c.sentinel()) {
			return c, -1
		}
	}
	return CodeOther, -1
}

// fatal reports whether err means the ring itself is broken (a lost peer,
// an ended context, a rank that never entered), so that the abort cannot
// complete a full round.
func fatal(err error) bool {
	c, _ := classify(err)
	return c == CodePeerLost || c == CodeCanceled || c == CodeDeadline || c == CodeTimeout
}

// TimeoutError reports a collective that did not finish within
// Ring.Timeout; errors.Is(err, ErrTimeout). Absent is the rank that never
// entered the collective (seen by its next rank, which got nothing of this
// collective from it), or -1 when the rank that gave up had heard from its
// previous rank and only knows that the collective did not finish.
type TimeoutError struct {
	Op     uint64
	Absent int
	After  time.Duration // how long the reporting rank waited (0 where it is not known)
	Detail string        // what the reporting rank saw, e.g. the ranks whose status never came

	text string // the reporting rank's whole text, on the other ranks (see RemoteError.Unwrap)
}

func (e *TimeoutError) Error() string {
	if e.text != "" {
		return e.text
	}
	after := ""
	if e.After > 0 {
		after = fmt.Sprintf(" within %v", e.After)
	}
	if e.Absent >= 0 {
		return fmt.Sprintf("ring: op %d: rank %d never entered the collective%s%s", e.Op, e.Absent, after, e.Detail)
	}
	return fmt.Sprintf("ring: op %d: not finished%s%s", e.Op, after, e.Detail)
}

// Is makes errors.Is(err, ErrTimeout) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// RemoteError is what every rank returns when a collective fails: it names
// the rank where the failure arose (Origin) and carries that rank's error
// text. errors.Is matches the sentinel of the original error
// (gradcodec.ErrNonFinite, gradcodec.ErrBadFrame, ErrShapeMismatch,
// ErrProtocol, ErrPeerLost, ErrTimeout, context.Canceled, ...) on every
// rank; for a lost peer errors.As finds a *PeerLostError with the lost rank,
// for a timeout a *TimeoutError with the absent rank. On the origin rank
// Unwrap returns the original error itself.
type RemoteError struct {
	Op     uint64    // the collective's sequence number
	Origin int       // rank where the failure arose
	Code   ErrorCode // class of the failure
	Lost   int       // the lost rank (CodePeerLost) or the absent one (CodeTimeout, -1 if unknown), else -1
	Msg    string    // the origin's error text

	cause error // the original error; set on the origin rank only
}

// Error returns the same text on every rank.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("ring: op %d failed on rank %d: %s", e.Op, e.Origin, e.Msg)
}

// Is matches the sentinel of the original error.
func (e *RemoteError) Is(target error) bool {
	s := e.Code.sentinel()
	return s != nil && target == s
}

// Unwrap returns the original error on the origin rank; elsewhere a
// *PeerLostError for a lost peer, else the sentinel of Code (or nil).
func (e *RemoteError) Unwrap() error {
	if e.cause != nil {
		return e.cause
	}
	switch e.Code {
	case CodePeerLost:
		return &PeerLostError{Rank: e.Lost, Cause: errors.New(e.Msg)}
	case CodeTimeout:
		// e.Msg is the reporting rank's TimeoutError text (behind its
		// "rank N: " context, if any): keep it as it is rather than
		// wrapping it in a second "ring: op N: ...".
		return &TimeoutError{Op: e.Op, Absent: e.Lost, text: e.Msg}
	}
	return e.Code.sentinel()
}

// newLocalError wraps a failure that arose on this rank.
func newLocalError(op uint64, rank int, err error) *RemoteError {
	var re *RemoteError
	if errors.As(err, &re) {
		return re
	}
	code, lost := classify(err)
	msg := err.Error()
	if len(msg) > maxAbortText {
		msg = msg[:maxAbortText]
	}
	return &RemoteError{Op: op, Origin: rank, Code: code, Lost: lost, Msg: msg, cause: err}
}

const (
	maxAbortText = 1024
	abortVersion = 1
	flagFatal    = 0x80 // abort flag: the ring is broken, do not wait for a full round
	doneOK       = 0    // done status: this rank finished its part
	doneStopped  = 1    // done status: this rank stopped because another failed
)

// token is the end-of-collective status a rank sends around the ring: a
// done (ok or stopped) or an abort (failure), with its origin.
type token struct {
	origin  int
	stopped bool         // done token of a rank that stopped early
	err     *RemoteError // abort token; nil for done
	fatal   bool
}

func encodeDone(origin int, stopped bool) []byte {
	st := byte(doneOK)
	if stopped {
		st = doneStopped
	}
	return binary.AppendUvarint([]byte{st}, uint64(origin))
}

func encodeAbort(e *RemoteError, fatal bool) []byte {
	flags := byte(abortVersion)
	if fatal {
		flags |= flagFatal
	}
	b := []byte{flags}
	b = binary.AppendUvarint(b, uint64(e.Origin))
	b = binary.AppendUvarint(b, uint64(e.Code))
	b = binary.AppendVarint(b, int64(e.Lost))
	return append(b, e.Msg...)
}

// maxTokenPayload (the text is at most maxAbortText) bounds the payload of a KindDone or KindAbort message:
// the most a receiver accepts where a status message may come next.
const maxTokenPayload = maxAbortText + 64

// isFatalAbort tells, without full parsing, whether m is a fatal abort.
func isFatalAbort(m Message) bool {
	return m.Kind == KindAbort && len(m.Payload) > 0 && m.Payload[0]&flagFatal != 0
}

// decodeToken parses a KindDone or KindAbort message from a ring of size n.
func decodeToken(m Message, size int) (token, error) {
	p := m.Payload
	bad := func(what string) (token, error) {
		return token{}, fmt.Errorf("%w: malformed %s message: %s", ErrProtocol, kindName(m.Kind), what)
	}
	switch m.Kind {
	case KindDone:
		if len(p) < 2 || p[0] > doneStopped {
			return bad("bad status")
		}
		o, k := binary.Uvarint(p[1:])
		if k <= 0 || 1+k != len(p) || o >= uint64(size) {
			return bad("bad origin")
		}
		return token{origin: int(o), stopped: p[0] == doneStopped}, nil
	case KindAbort:
		if len(p) < 1 || p[0]&^flagFatal != abortVersion {
			return bad("bad version")
		}
		t := token{fatal: p[0]&flagFatal != 0}
		p = p[1:]
		o, k := binary.Uvarint(p)
		if k <= 0 || o >= uint64(size) {
			return bad("bad origin")
		}
		p = p[k:]
		c, k := binary.Uvarint(p)
		if k <= 0 || c >= uint64(numCodes) {
			return bad("bad code")
		}
		p = p[k:]
		lost, k := binary.Varint(p)
		if k <= 0 || lost < -1 || lost >= int64(size) {
			return bad("bad lost rank")
		}
		p = p[k:]
		if len(p) > maxAbortText {
			return bad("text too long")
		}
		t.origin = int(o)
		t.err = &RemoteError{Op: m.Op, Origin: int(o), Code: ErrorCode(c), Lost: int(lost), Msg: string(p)}
		return t, nil
	}
	return bad("not a token")
}

func kindName(k Kind) string {
	switch k {
	case KindReduceScatter:
		return "reduce-scatter"
	case KindAllGather:
		return "allgather"
	case KindBytes:
		return "bytes"
	case KindAbort:
		return "abort"
	case KindDone:
		return "done"
	case KindEnter:
		return "enter"
	}
	return fmt.Sprintf("kind(%d)", k)
}

// String returns the kind's name.
func (k Kind) String() string { return kindName(k) }
