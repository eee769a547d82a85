package collective

// This file holds the contract examples and the launcher build on: sentinel
// errors, the error type and the per-call statistics. Config is in config.go,
// Comm and its collectives in comm.go, per-call options in options.go, the
// DDP-style Bucketer in bucketer.go.

import (
	"errors"
	"fmt"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
)

// Sentinel errors, usable with errors.Is on any error this package returns.
var (
	// ErrPeerLost: a peer died or its link broke. errors.As with
	// *PeerLostError tells which rank.
	ErrPeerLost = ring.ErrPeerLost
	// ErrShapeMismatch: ranks passed different lengths, or a layout does not
	// match its data. errors.Is also matches gradcodec.ErrShapeMismatch.
	ErrShapeMismatch = ring.ErrShapeMismatch
	// ErrTimeout: a collective did not finish within Config.Timeout, most
	// likely because a rank never entered it; errors.As with *TimeoutError
	// tells which rank.
	ErrTimeout = ring.ErrTimeout
	// ErrNonFinite: a gradient held NaN or Inf.
	ErrNonFinite = gradcodec.ErrNonFinite
	// ErrBadFrame: a frame on the wire was malformed or corrupted.
	ErrBadFrame = gradcodec.ErrBadFrame
	// ErrClosed: the Comm was closed.
	ErrClosed = errors.New("collective: communicator closed")
	// ErrAborted: an earlier collective failed and the Comm can no longer be
	// used; the error also wraps that first failure.
	ErrAborted = errors.New("collective: communicator aborted by an earlier error")
	// ErrInvalidArgument: a call's arguments are wrong (a bad root, a layout
	// that does not cover the data, an unknown codec).
	ErrInvalidArgument = errors.New("collective: invalid argument")
)

// PeerLostError reports the rank that was lost; errors.Is(err, ErrPeerLost).
type PeerLostError = ring.PeerLostError

// TimeoutError reports a collective that timed out; Absent is the rank that
// never entered it (-1 if the reporting rank could not tell);
// errors.Is(err, ErrTimeout).
type TimeoutError = ring.TimeoutError

// Error is the error every collective returns: the rank that reports it, the
// operation sequence number (0 when the failure happened outside an
// operation) and the cause.
type Error struct {
	Rank int    // rank that returns the error
	Op   uint64 // operation sequence number; 0 if none
	What string // the call, e.g. "allreduce"
	Err  error  // cause
}

func (e *Error) Error() string {
	if e.Op == 0 {
		return fmt.Sprintf("collective: rank %d: %s: %v", e.Rank, e.What, e.Err)
	}
	return fmt.Sprintf("collective: rank %d: op %d: %s: %v", e.Rank, e.Op, e.What, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes both ring's and gradcodec's shape-mismatch sentinels match
// ErrShapeMismatch.
func (e *Error) Is(target error) bool {
	if target == ErrShapeMismatch {
		return errors.Is(e.Err, gradcodec.ErrShapeMismatch)
	}
	return false
}

// Stats describes one collective as seen by this rank, or, from Comm.Stats
// and Bucketer.Wait, the sum over several.
type Stats struct {
	Calls       int           // collectives counted
	Values      int64         // values reduced
	Codec       string        // codec of the compressed part ("raw" in warm-up); "mixed" when sums disagree
	WireBytes   int64         // payload bytes this rank sent
	RawBytes    int64         // bytes fp32 would have sent over the same hops
	EncodeTime  time.Duration // time in the codec's encoder
	DecodeTime  time.Duration // time in the codec's decoder
	NetworkTime time.Duration // time blocked sending to and receiving from neighbours
	QueueTime   time.Duration // time waiting behind earlier collectives of this Comm
	Total       time.Duration // wall time of the collective itself, queueing excluded
}

// BitsPerValue returns the achieved rate: 8*WireBytes per value that fp32
// would have sent (32 for raw, 0 when nothing was sent).
func (s Stats) BitsPerValue() float64 {
	return ring.BitsPerValue(s.WireBytes, s.RawBytes)
}

// Add returns the sum of s and o.
func (s Stats) Add(o Stats) Stats {
	codec := s.Codec
	switch {
	case codec == "":
		codec = o.Codec
	case o.Codec != "" && o.Codec != codec:
		codec = "mixed"
	}
	return Stats{
		Calls:       s.Calls + o.Calls,
		Values:      s.Values + o.Values,
		Codec:       codec,
		WireBytes:   s.WireBytes + o.WireBytes,
		RawBytes:    s.RawBytes + o.RawBytes,
		EncodeTime:  s.EncodeTime + o.EncodeTime,
		DecodeTime:  s.DecodeTime + o.DecodeTime,
		NetworkTime: s.NetworkTime + o.NetworkTime,
		QueueTime:   s.QueueTime + o.QueueTime,
		Total:       s.Total + o.Total,
	}
}

// Sub returns s minus o, e.g. the figures of one epoch from two snapshots of
// Comm.Stats. Codec is kept from s.
func (s Stats) Sub(o Stats) Stats {
	return Stats{
		Calls:       s.Calls - o.Calls,
		Values:      s.Values - o.Values,
		Codec:       s.Codec,
		WireBytes:   s.WireBytes - o.WireBytes,
		RawBytes:    s.RawBytes - o.RawBytes,
		EncodeTime:  s.EncodeTime - o.EncodeTime,
		DecodeTime:  s.DecodeTime - o.DecodeTime,
		NetworkTime: s.NetworkTime - o.NetworkTime,
		QueueTime:   s.QueueTime - o.QueueTime,
		Total:       s.Total - o.Total,
	}
}

func (s Stats) String() string {
	return fmt.Sprintf("%d values codec %s wire %d B (raw %d B) %.3f bits/value encode %v decode %v network %v total %v",
		s.Values, s.Codec, s.WireBytes, s.RawBytes, s.BitsPerValue(), s.EncodeTime, s.DecodeTime, s.NetworkTime, s.Total)
}
