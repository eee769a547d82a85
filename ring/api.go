package ring

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vccl/vccl/gradcodec"
)

// Kind tells what a Message carries.
type Kind uint8

// Message kinds.
const (
	KindReduceScatter Kind = iota + 1 // a partial sum of one sub-chunk
	KindAllGather                     // an owner's final encoded sub-chunk
	KindBytes                         // opaque payload of AllGather/Broadcast/Barrier
	KindAbort                         // an error travelling around the ring
	KindDone                          // a rank's end-of-collective status (see doc.go)
	KindEnter                         // the first message of every collective: "this rank entered it"
)

// Message is one unit on a link. Links deliver messages in order.
type Message struct {
	Op      uint64 // sequence number of the collective; equal on all ranks for the same call
	Kind    Kind
	Hop     uint32 // hop index within the phase
	Chunk   uint32 // ring chunk index
	Sub     uint32 // sub-chunk index within the chunk
	Total   uint64 // total number of values of the collective, checked by the receiver
	Payload []byte
	// Sum is the CRC-32C (Castagnoli) of Payload, computed once by the
	// rank that produced the bytes, or 0 for "not computed". A Link that
	// moves messages between processes carries it end to end: Send computes
	// it only when it is 0, and the receiving side checks the payload
	// against it and fails Recv with an error wrapping
	// gradcodec.ErrBadFrame on a mismatch. Recv always returns it set. The
	// ring fills it for the data it sends and passes a received Sum on with
	// bytes it forwards unchanged, so each message costs one checksum pass
	// on each side, whatever the number of hops it crosses.
	Sum uint32
}

// LimitedLink is an optional interface of a Link: RecvLimit is Recv for a
// message whose payload the caller knows to be at most max bytes. A link
// must check a message's announced length against max before it allocates
// or reads the payload, and fail (wrapping gradcodec.ErrBadFrame) if it is
// larger. The ring calls it with what the collective expects next, so a
// peer's header can never size a buffer beyond that.
type LimitedLink interface {
	RecvLimit(ctx context.Context, max int) (Message, error)
}

// PlacingLink is an optional interface of a Link: RecvPlace is RecvLimit
// where the caller may choose the memory a payload is received into. Once
// the link has read and checked a message's header it may call place with
// that header (Payload nil, Sum set) and the payload's length; place
// returns memory of exactly that length to receive the payload into, or
// nil for a buffer of the link's. The link calls place only for the
// message this RecvPlace returns, from any goroutine, and checks the
// payload (Message.Sum) in that memory; on a mismatch RecvPlace fails as
// RecvLimit would, leaving the memory's contents unspecified. RecvPlace
// never returns, whatever its outcome, while the link still writes into
// placed memory. A returned payload that is placed memory must not be
// handed to Recycle.
type PlacingLink interface {
	LimitedLink
	RecvPlace(ctx context.Context, max int, place func(m Message, n int) []byte) (Message, error)
}

// Recycler is an optional interface of a Link: Recycle hands back the
// Payload of a message that Recv returned, once the caller no longer reads
// it, so the link can receive into the same memory again. A payload must
// not be used after it is recycled. Calling it is optional for memory the
// garbage collector reclaims, but a link may lend memory of its own (the
// worker's shared-memory ring): a payload of that kind that is never
// recycled keeps its place until the link closes. The ring recycles every
// payload it received once it is done with it, however the collective
// ends.
type Recycler interface {
	Recycle(payload []byte)
}

// RawWireCodec is an optional interface of a Codec. RawWire reports that
// the codec is lossless fp32 whose wire format the ring may produce itself:
// the values as little-endian float32, nothing else. The ring then skips
// Encode and Decode: it sends the tensor's own memory, adds received bytes
// straight into it in one fused pass, and checks for NaN/Inf where values
// enter the sum (see doc.go, "The raw data path").
type RawWireCodec interface {
	Codec
	RawWire() bool
}

// Link is one direction of a connection between ring neighbours. Send and
// Recv must return promptly with an error when ctx ends or the peer is lost
// (wrapping ErrPeerLost with the peer's rank). Send may be called
// concurrently with Recv, but neither concurrently with itself.
type Link interface {
	Send(ctx context.Context, m Message) error
	Recv(ctx context.Context) (Message, error)
}

// Codec compresses chunks for the ring. Encode is never called concurrently
// with itself, nor Decode with itself; Encode and Decode may run at the same
// time.
type Codec interface {
	// Encode returns the wire bytes for src, made of pieces laid out in
	// order (the sum of their lengths is len(src)), and writes into recon
	// (len(src)) exactly what Decode of those bytes yields on any rank.
	// recon is nil where the ring does not need it (a reduce-scatter
	// hop, whose sender keeps only its error feedback); Encode then
	// writes no reconstruction but updates error feedback the same way.
	// stream names the slot for error feedback and rate control; the same
	// slot gets the same name on every call.
	Encode(stream string, src []float32, pieces []gradcodec.Shape, recon []float32) ([]byte, error)
	// Decode decodes wire bytes made by Encode into dst.
	Decode(dst []float32, wire []byte) error
}

// Sentinel errors, usable with errors.Is.
var (
	ErrPeerLost      = errors.New("ring: peer lost")
	ErrShapeMismatch = errors.New("ring: length mismatch between ranks")
	ErrProtocol      = errors.New("ring: unexpected message")
	// ErrTimeout: a collective did not finish within Ring.Timeout, most
	// likely because a rank never entered it; errors.As finds a
	// *TimeoutError naming that rank.
	ErrTimeout = errors.New("ring: collective timed out")
)

// PeerLostError reports the rank that was lost; errors.Is(err, ErrPeerLost).
type PeerLostError struct {
	Rank  int
	Cause error
}

func (e *PeerLostError) Error() string {
	return fmt.Sprintf("ring: rank %d lost: %v", e.Rank, e.Cause)
}

// Is makes errors.Is(err, ErrPeerLost) true.
func (e *PeerLostError) Is(target error) bool { return target == ErrPeerLost }

// Unwrap returns the cause.
func (e *PeerLostError) Unwrap() error { return e.Cause }

// Stats describes one collective as seen by one rank.
type Stats struct {
	Values     int           // values reduced
	WireBytes  int64         // payload bytes this rank sent
	RawBytes   int64         // what fp32 would have sent over the same hops
	EncodeTime time.Duration // time spent in Codec.Encode
	DecodeTime time.Duration // time spent in Codec.Decode
	WaitTime   time.Duration // time blocked in Link.Send/Recv
	Total      time.Duration
}

// BitsPerValue returns 8*WireBytes/(RawBytes/4), the achieved rate.
func (s Stats) BitsPerValue() float64 {
	return BitsPerValue(s.WireBytes, s.RawBytes)
}

// BitsPerValue returns the achieved rate of sending wireBytes where fp32
// would have sent rawBytes: 8*wireBytes per rawBytes/4 values (0 when
// rawBytes is 0). Every statistic of vccl computes its rate with it.
func BitsPerValue(wireBytes, rawBytes int64) float64 {
	if rawBytes == 0 {
		return 0
	}
	return 8 * float64(wireBytes) / (float64(rawBytes) / 4)
}
