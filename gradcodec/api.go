package gradcodec

import "errors"

// Shape is the 2-D layout of a tensor: Rows × Cols values in row-major order.
type Shape struct{ Rows, Cols int }

// Len returns Rows*Cols.
func (s Shape) Len() int { return s.Rows * s.Cols }

// Sentinel errors, usable with errors.Is. Errors returned by this package wrap
// one of these with details (which value, which field, which codec).
var (
	ErrNonFinite          = errors.New("gradcodec: non-finite value")
	ErrBadFrame           = errors.New("gradcodec: bad frame")
	ErrShapeMismatch      = errors.New("gradcodec: shape mismatch")
	ErrUnknownCodec       = errors.New("gradcodec: unknown codec")
	ErrBackendUnavailable = errors.New("gradcodec: backend unavailable")
)

// Options selects and tunes a codec. The zero value is not useful; start from
// DefaultOptions.
type Options struct {
	// Codec is a registered codec's name (see Codecs): "raw", "fp16",
	// "bf16", "int8", "tensor" from this package; "h264" and "hevc" once
	// package gradcodec/video is imported.
	Codec string
	// Backend is "auto" (NVENC/NVDEC when they open, else software),
	// "nvenc" or "software". Ignored by non-video codecs. Defaults to "auto".
	Backend string
	// BitsPerValue is the target rate of the tensor and video codecs.
	// Defaults to 1.4.
	BitsPerValue float64
	// Preset is the encoder preset; "" picks the codec's measured default.
	Preset string
	// Threads is how many threads a video encoder may use on one picture
	// (libx264 sliced threads, libx265 wavefronts). 0 means 1. Ignored by
	// non-video codecs and by NVENC.
	Threads int
}

// Encoder compresses one stream of similar tensors (the same slot of a
// gradient, step after step) into self-describing frames. Rate control state
// and codec contexts live in the Encoder, so keep one per stream. An Encoder
// is not safe for concurrent use.
type Encoder interface {
	// Encode appends to dst the frame holding src laid out as shape and
	// returns the extended slice. len(src) must equal shape.Len().
	Encode(dst []byte, src []float32, shape Shape) ([]byte, error)
	// Name returns the codec name, e.g. "hevc".
	Name() string
	// Close frees the codec contexts. It is idempotent.
	Close() error
}

// StreamEncoder is implemented by the Encoders with rate control (tensor,
// h264, hevc): one Encoder, and its codec contexts, can serve several
// streams of one kind — the sub-chunks of a ring chunk — when the caller
// names the stream before each frame. Each stream keeps its own rate
// control state (per shape), as if it had an Encoder of its own; frames
// before the first SetStream belong to the stream "".
type StreamEncoder interface {
	Encoder
	// SetStream makes the following frames part of stream key.
	SetStream(key string)
}

// ReconEncoder is implemented by every Encoder of this module: it encodes
// and also writes into recon (len(src) values, or nil) exactly what any
// Decoder yields for the returned frame. The video encoders take it from
// libx264's/libx265's own reconstruction (or decode NVENC's frame), which
// the scale refit of package gradcodec/video needs anyway, so it is nearly
// free.
type ReconEncoder interface {
	Encoder
	EncodeRecon(dst []byte, src []float32, shape Shape, recon []float32) ([]byte, error)
}

// ResidualEncoder is implemented by every Encoder of this module: it is
// EncodeRecon that also writes the error-feedback residual src − recon into
// residual (len(src) values) while the reconstruction is in cache, so that
// error feedback costs no pass of its own (see ErrorFeedback.ResidualFor).
type ResidualEncoder interface {
	ReconEncoder
	EncodeResidual(dst []byte, src []float32, shape Shape, recon, residual []float32) ([]byte, error)
}

// FeedbackEncoder is implemented by encoders that also add the
// error-feedback residual themselves (the h264 and hevc ones), so that
// error feedback needs neither a copy of the input nor a pass of its own:
// EncodeFeedback encodes src + residual (summed in float32, as
// ErrorFeedback.ApplyTo does, while each scale group is in cache), writes
// into recon what every Decoder yields for the frame and overwrites
// residual with the new residual src + residual − recon. The results are
// those of ApplyTo followed by EncodeResidual; on error residual is
// unspecified (drop it: ErrorFeedback.Reset). recon may be nil when the
// caller needs only the frame and the new residual (a ring's reduce-scatter
// hop): the frame and residual are the same, and no reconstruction is
// written. See ErrorFeedback.Carry.
type FeedbackEncoder interface {
	ResidualEncoder
	EncodeFeedback(dst []byte, src []float32, shape Shape, recon, residual []float32) ([]byte, error)
}
