package gradcodec

import (
	"fmt"
	"math"

	"github.com/vccl/vccl/internal/kern"
)

// MinTensorValues is the smallest tensor the tensor codec entropy codes.
// Below it a frame's fixed costs (about 60 bytes of header, tables and
// checksum) exceed any sensible rate, so tensor Encoders send such tensors
// as int8 frames (about 8–9 bits/value), as the video codecs do.
const MinTensorValues = 1024

func init() {
	Register(Codec{
		Name: "tensor",
		ID:   idTensor,
		CheckHeader: func(h Header) error {
			if (h.PicWidth | h.PicHeight | h.NumFrames | h.QP) != 0 {
				return fmt.Errorf("%w: picture fields set for codec tensor", ErrBadFrame)
			}
			if h.Payload < tensorFixed {
				return fmt.Errorf("%w: tensor payload of %d bytes is shorter than its %d-byte fixed part", ErrBadFrame, h.Payload, tensorFixed)
			}
			return nil
		},
		NewEncoder: newTensorCodec,
		NewPayloadDecoder: func(string) (PayloadDecoder, error) {
			return &tensorPayloadDecoder{}, nil
		},
	})
}

// tensorCodec is the Encoder of codec "tensor".
type tensorCodec struct {
	enc    *tensorEncoder
	small  ReconEncoder // int8 frames for tensors under MinTensorValues
	dec    tensorDecoder
	closed bool
}

var (
	_ ResidualEncoder = (*tensorCodec)(nil)
	_ StreamEncoder   = (*tensorCodec)(nil)
)

func newTensorCodec(opts Options) (Encoder, error) {
	bpv := opts.BitsPerValue
	if bpv <= 0 {
		bpv = 1.4
	}
	if math.IsNaN(bpv) || bpv > 32 {
		return nil, fmt.Errorf("gradcodec: tensor: bits per value %v, want (0, 32]", opts.BitsPerValue)
	}
	return &tensorCodec{enc: newTensorEncoder(bpv)}, nil
}

// SetStream makes the following frames part of stream key, with its own
// rate control state (see StreamEncoder).
func (e *tensorCodec) SetStream(key string) { e.enc.stream = key }

// Name returns "tensor".
func (e *tensorCodec) Name() string { return "tensor" }

// Close marks the encoder closed. It is idempotent.
func (e *tensorCodec) Close() error {
	e.closed = true
	return nil
}

// Encode appends the frame of src laid out as shape to dst.
func (e *tensorCodec) Encode(dst []byte, src []float32, shape Shape) ([]byte, error) {
	return e.EncodeRecon(dst, src, shape, nil)
}

// EncodeRecon is Encode that also writes into recon (when not nil) what
// every Decoder yields for the frame: it decodes its own payload.
func (e *tensorCodec) EncodeRecon(dst []byte, src []float32, shape Shape, recon []float32) ([]byte, error) {
	if e.closed {
		return dst, fmt.Errorf("gradcodec: tensor encoder is closed")
	}
	if err := CheckShape("tensor", src, shape); err != nil {
		return dst, err
	}
	if recon != nil && len(recon) != len(src) {
		return dst, fmt.Errorf("tensor: %w: recon has %d values, src %d", ErrShapeMismatch, len(recon), len(src))
	}
	if n := shape.Len(); n > 0 && n < MinTensorValues {
		if e.small == nil {
			e.small = &simpleEncoder{id: idInt8, name: "int8"}
		}
		return e.small.EncodeRecon(dst, src, shape, recon)
	}
	var w FrameWriter
	w.Begin(dst, idTensor, shape, 0, 0, 0, 0)
	at := len(w.Buf)
	b, err := e.enc.appendPayload(w.Buf, src, shape)
	if err != nil {
		return dst, err
	}
	w.Buf = b
	out := w.Finish()
	if recon != nil {
		if err := e.dec.decodePayload(recon, shape, out[at:len(out)-TrailerSize]); err != nil {
			return dst, fmt.Errorf("gradcodec: internal: tensor: own frame: %w", err)
		}
	}
	return out, nil
}

// EncodeResidual is EncodeRecon that also writes src − recon into
// residual (error feedback without a pass of its own in the caller).
func (e *tensorCodec) EncodeResidual(dst []byte, src []float32, shape Shape, recon, residual []float32) ([]byte, error) {
	if recon == nil || len(residual) != len(src) {
		return dst, fmt.Errorf("tensor: %w: EncodeResidual needs recon and a residual of %d values (has %d)", ErrShapeMismatch, len(src), len(residual))
	}
	out, err := e.EncodeRecon(dst, src, shape, recon)
	if err != nil {
		return out, err
	}
	kern.SubTo(residual, src, recon)
	return out, nil
}

// tensorPayloadDecoder decodes tensor payloads for Decoder.
type tensorPayloadDecoder struct{ d tensorDecoder }

func (p *tensorPayloadDecoder) DecodePayload(dst []float32, h Header, payload []byte, _ []float32) error {
	return p.d.decodePayload(dst, h.Shape, payload)
}

func (p *tensorPayloadDecoder) Close() error { return nil }
