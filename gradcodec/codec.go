package gradcodec

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/vccl/vccl/internal/kern"
)

// Quantization constants. Scales are a multiple of each row's RMS, capped
// at the row's absolute maximum; values beyond the scale are clipped (error
// feedback carries the clipped part to the next step).
const (
	// Int8RMSMultiple is k of the int8 codec's per-row scale min(k·RMS, max|x|).
	Int8RMSMultiple = 12
)

// DefaultOptions returns the defaults: h264 (libx264 ultrafast encodes about
// ten times faster than libx265 on a CPU; see package gradcodec/video),
// backend auto, 1.4 bits per value, the codec's measured default preset.
// h264 needs the video plug-in: a program that does not import
// gradcodec/video picks a registered codec itself.
func DefaultOptions() Options {
	return Options{Codec: "h264", Backend: "auto", BitsPerValue: 1.4}
}

// NewEncoder returns an Encoder for opts.Codec, or an error wrapping
// ErrUnknownCodec (naming the registered codecs, and the package to import
// for a known plug-in) or ErrBackendUnavailable. Empty Backend means
// "auto"; BitsPerValue <= 0 means 1.4.
func NewEncoder(opts Options) (Encoder, error) {
	c, ok := lookup(opts.Codec)
	if !ok {
		return nil, unknownCodec(opts.Codec)
	}
	return c.NewEncoder(opts)
}

// The pure-Go codecs of this package.
func init() {
	for _, c := range []struct {
		name  string
		id    uint8
		bytes int // payload bytes per value
	}{{"raw", idRaw, 4}, {"fp16", idFP16, 2}, {"bf16", idBF16, 2}, {"int8", idInt8, 1}} {
		id, name, per := c.id, c.name, c.bytes
		Register(Codec{
			Name:   name,
			ID:     id,
			Scaled: id == idInt8,
			CheckHeader: func(h Header) error {
				if (h.PicWidth | h.PicHeight | h.NumFrames | h.QP) != 0 {
					return fmt.Errorf("%w: picture fields set for codec %s", ErrBadFrame, name)
				}
				if n := h.Shape.Len(); h.Payload != per*n {
					return fmt.Errorf("%w: %s payload of %d bytes for %d values", ErrBadFrame, name, h.Payload, n)
				}
				return nil
			},
			NewEncoder: func(Options) (Encoder, error) { return &simpleEncoder{id: id, name: name}, nil },
			NewPayloadDecoder: func(string) (PayloadDecoder, error) {
				return simpleDecoder{}, nil
			},
		})
	}
}

// simpleEncoder implements raw, fp16, bf16 and int8.
type simpleEncoder struct {
	id      uint8
	name    string
	scales  []uint16
	fscales []float32
	closed  bool
}

var _ ResidualEncoder = (*simpleEncoder)(nil)

func (e *simpleEncoder) Name() string { return e.name }

func (e *simpleEncoder) Close() error { e.closed = true; return nil }

func (e *simpleEncoder) Encode(dst []byte, src []float32, shape Shape) ([]byte, error) {
	return e.EncodeRecon(dst, src, shape, nil)
}

// EncodeRecon is Encode that also writes into recon what every Decoder
// yields for the frame (recon may be nil).
func (e *simpleEncoder) EncodeRecon(dst []byte, src []float32, shape Shape, recon []float32) ([]byte, error) {
	out, err := e.encode(dst, src, shape)
	if err != nil || recon == nil {
		return out, err
	}
	if len(recon) != len(src) {
		return dst, fmt.Errorf("%s: %w: recon has %d values, src %d", e.Name(), ErrShapeMismatch, len(recon), len(src))
	}
	frame := out[len(dst):]
	h, err := ParseHeader(frame)
	if err != nil {
		return dst, fmt.Errorf("gradcodec: internal: own frame: %w", err)
	}
	e.fscales = resize(e.fscales, h.Scales)
	if err := readScales(e.fscales, frame[HeaderSize:]); err != nil {
		return dst, err
	}
	zoff := HeaderSize + 2*h.Scales
	if err := decodeSimple(recon, h, frame[zoff+h.ZeroMap:h.Size-TrailerSize], e.fscales); err != nil {
		return dst, err
	}
	ApplyZeroMap(recon, shape, frame[zoff:zoff+h.ZeroMap])
	return out, nil
}

// EncodeResidual is EncodeRecon that also writes src − recon into
// residual.
func (e *simpleEncoder) EncodeResidual(dst []byte, src []float32, shape Shape, recon, residual []float32) ([]byte, error) {
	if recon == nil || len(residual) != len(src) {
		return dst, fmt.Errorf("%s: %w: EncodeResidual needs recon and a residual of %d values (has %d)", e.Name(), ErrShapeMismatch, len(src), len(residual))
	}
	out, err := e.EncodeRecon(dst, src, shape, recon)
	if err != nil {
		return out, err
	}
	kern.SubTo(residual, src, recon)
	return out, nil
}

func (e *simpleEncoder) encode(dst []byte, src []float32, shape Shape) ([]byte, error) {
	name := e.Name()
	if e.closed {
		return dst, fmt.Errorf("gradcodec: %s encoder is closed", name)
	}
	if err := CheckShape(name, src, shape); err != nil {
		return dst, err
	}
	var w FrameWriter
	w.Begin(dst, e.id, shape, 0, 0, 0, 0)
	b := w.Buf
	at := len(b)
	n := len(src)
	var ok bool
	switch e.id {
	case idRaw:
		b = growLen(b, 4*n)
		ok = putRaw(b[at:], src)
	case idFP16:
		b = growLen(b, 2*n)
		ok = putFP16(b[at:], src)
	case idBF16:
		b = growLen(b, 2*n)
		ok = putBF16(b[at:], src)
	case idInt8:
		ng, nz := ScaleGroups(shape), ZeroMapSize(shape)
		e.scales = resize(e.scales, ng)
		b = growLen(b, 2*ng+nz+n)
		var zmap []byte
		if nz > 0 {
			zmap = b[at+2*ng : at+2*ng+nz]
		}
		ok = putInt8(b[at+2*ng+nz:], e.scales, zmap, src, shape)
		for i, h := range e.scales {
			binary.LittleEndian.PutUint16(b[at+2*i:], h)
		}
	}
	if !ok {
		if err := CheckFinite(name, src); err != nil {
			return dst, err
		}
		return dst, fmt.Errorf("gradcodec: internal: %s found a non-finite value CheckFinite does not", name)
	}
	w.Buf = b
	return w.Finish(), nil
}

// simpleDecoder decodes raw, fp16, bf16 and int8 payloads; it keeps no
// state.
type simpleDecoder struct{}

func (simpleDecoder) DecodePayload(dst []float32, h Header, payload []byte, scales []float32) error {
	return decodeSimple(dst, h, payload, scales)
}

func (simpleDecoder) Close() error { return nil }

// decodeSimple decodes the payload of raw, fp16, bf16 and int8 frames.
func decodeSimple(dst []float32, h Header, body []byte, scales []float32) error {
	ok := true
	switch h.Codec {
	case "raw":
		ok = getRaw(dst, body)
	case "fp16":
		ok = getFP16(dst, body)
	case "bf16":
		ok = getBF16(dst, body)
	case "int8":
		getInt8(dst, body, scales, h.Shape)
	}
	if ok {
		return nil
	}
	if i := FirstNonFinite(dst); i >= 0 {
		return fmt.Errorf("%w: %s value %d decodes to %v", ErrBadFrame, h.Codec, i, dst[i])
	}
	return fmt.Errorf("%w: %s payload decodes to a non-finite value", ErrBadFrame, h.Codec)
}

// growLen extends b by n bytes (contents unspecified), reusing its array
// when it has room.
func growLen(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b)+n, len(b)+n+len(b)/4)
		copy(nb, b)
		return nb
	}
	return b[:len(b)+n]
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// availableList formats a sorted list of names for error messages.
func availableList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	s := append([]string(nil), names...)
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// AppendZeroMap appends the zero-row bitmap of src, for a frame of a Scaled
// codec, when the frame has one (see ZeroMapSize).
func AppendZeroMap(dst []byte, src []float32, s Shape) []byte {
	n := ZeroMapSize(s)
	if n == 0 {
		return dst
	}
	at := len(dst)
	dst = append(dst, make([]byte, n)...)
	for r := 0; r < s.Rows; r++ {
		if IsZero(src[r*s.Cols : (r+1)*s.Cols]) {
			dst[at+r/8] |= 1 << (r % 8)
		}
	}
	return dst
}

// ApplyZeroMap zeroes the rows of dst marked in the zero-row bitmap zmap.
func ApplyZeroMap(dst []float32, s Shape, zmap []byte) {
	if len(zmap) == 0 {
		return
	}
	for r := 0; r < s.Rows; r++ {
		if zmap[r/8]&(1<<(r%8)) != 0 {
			clear(dst[r*s.Cols : (r+1)*s.Cols])
		}
	}
}

// IsZero reports whether every value of v is zero.
func IsZero(v []float32) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}
