package gradcodec

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Quantization constants. Scales are a multiple of each row's RMS, capped
// at the row's absolute maximum; values beyond the scale are clipped (error
// feedback carries the clipped part to the next step).
const (
	// Int8RMSMultiple is k of the int8 codec's per-row scale min(k·RMS, max|x|).
	Int8RMSMultiple = 12
	// VideoRMSMultiple is k of the video codecs' per-row scale
	// min(k·RMS, max|x|) before rate control stretches it by up to 2^(1/6)
	// between integer QPs and the least-squares refit after decoding.
	VideoRMSMultiple = 8
)

// DefaultOptions returns the defaults: h264 (libx264 ultrafast encodes about
// ten times faster than libx265 on a CPU; see doc.go), backend auto, 1.4
// bits per value, the codec's measured default preset.
func DefaultOptions() Options {
	return Options{Codec: "h264", Backend: "auto", BitsPerValue: 1.4}
}

// Codecs returns the codec names NewEncoder accepts, baselines first.
func Codecs() []string {
	return []string{"raw", "fp16", "bf16", "int8", "h264", "hevc"}
}

// NewEncoder returns an Encoder for opts.Codec, or an error wrapping
// ErrUnknownCodec / ErrBackendUnavailable that names what is available.
// Empty Backend means "auto"; BitsPerValue <= 0 means 1.4.
func NewEncoder(opts Options) (Encoder, error) {
	switch opts.Codec {
	case "raw":
		return &simpleEncoder{id: idRaw}, nil
	case "fp16":
		return &simpleEncoder{id: idFP16}, nil
	case "bf16":
		return &simpleEncoder{id: idBF16}, nil
	case "int8":
		return &simpleEncoder{id: idInt8}, nil
	case "h264", "hevc":
		return newVideoEncoder(opts)
	}
	return nil, fmt.Errorf("%w %q: available codecs are %s", ErrUnknownCodec, opts.Codec, strings.Join(Codecs(), ", "))
}

// simpleEncoder implements raw, fp16, bf16 and int8.
type simpleEncoder struct {
	id      uint8
	scales  []uint16
	fscales []float32
	closed  bool
}

var _ Encoder = (*simpleEncoder)(nil)

func (e *simpleEncoder) Name() string { return codecNames[e.id] }

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
	if err := decodeSimple(recon, h, frame[zoff+h.ZeroMap:h.Size-TrailerSize], e.fscales, frame[zoff:zoff+h.ZeroMap]); err != nil {
		return dst, err
	}
	return out, nil
}

func (e *simpleEncoder) encode(dst []byte, src []float32, shape Shape) ([]byte, error) {
	name := e.Name()
	if e.closed {
		return dst, fmt.Errorf("gradcodec: %s encoder is closed", name)
	}
	if err := checkShape(name, src, shape); err != nil {
		return dst, err
	}
	if err := checkFinite(name, src); err != nil {
		return dst, err
	}
	var w frameWriter
	w.begin(dst, e.id, shape, 0, 0, 0, 0)
	b := w.buf
	switch e.id {
	case idRaw:
		b = growBytes(b, 4*len(src))
		for _, v := range src {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	case idFP16:
		b = growBytes(b, 2*len(src))
		for _, v := range src {
			b = binary.LittleEndian.AppendUint16(b, toFP16(v))
		}
	case idBF16:
		b = growBytes(b, 2*len(src))
		for _, v := range src {
			b = binary.LittleEndian.AppendUint16(b, toBF16(v))
		}
	case idInt8:
		ns := scaleCount(idInt8, shape)
		e.scales = resize(e.scales, ns)
		computeScales(e.scales, src, shape, Int8RMSMultiple, 1)
		b = putScales(b, e.scales)
		b = appendZeroMap(b, src, shape, idInt8)
		b = growBytes(b, len(src))
		g := scaleGroupRows(shape) * shape.Cols
		for i, h := range e.scales {
			lo := i * g
			hi := min(lo+g, len(src))
			sc := fromBF16(h)
			if sc == 0 {
				for range src[lo:hi] {
					b = append(b, 0)
				}
				continue
			}
			inv := 127 / sc
			for _, v := range src[lo:hi] {
				b = append(b, byte(int8(quant127(v*inv))))
			}
		}
	}
	w.buf = b
	return w.finish(2*scaleCount(e.id, shape) + zeroMapBytes(e.id, shape)), nil
}

// quant127 rounds v to the nearest integer in [-127, 127].
func quant127(v float32) int32 {
	if v >= 127 {
		return 127
	}
	if v <= -127 {
		return -127
	}
	if v < 0 {
		return -int32(0.5 - v)
	}
	return int32(v + 0.5)
}

// decodeSimple decodes the payload of raw, fp16, bf16 and int8 frames.
func decodeSimple(dst []float32, h Header, body []byte, scales []float32, zmap []byte) error {
	switch h.Codec {
	case "raw":
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:]))
		}
	case "fp16":
		for i := range dst {
			dst[i] = fromFP16(binary.LittleEndian.Uint16(body[2*i:]))
		}
	case "bf16":
		for i := range dst {
			dst[i] = fromBF16(binary.LittleEndian.Uint16(body[2*i:]))
		}
	case "int8":
		g := scaleGroupRows(h.Shape) * h.Shape.Cols
		for i, sc := range scales {
			lo := i * g
			hi := min(lo+g, len(dst))
			m := sc / 127
			for j := lo; j < hi; j++ {
				dst[j] = float32(int8(body[j])) * m
			}
		}
		applyZeroMap(dst, h.Shape, zmap)
	}
	for i, v := range dst {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			return fmt.Errorf("%w: %s value %d decodes to %v", ErrBadFrame, h.Codec, i, v)
		}
	}
	return nil
}

func growBytes(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		return nb
	}
	return b
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

// appendZeroMap appends the zero-row bitmap of src when the frame has one.
func appendZeroMap(dst []byte, src []float32, s Shape, id uint8) []byte {
	n := zeroMapBytes(id, s)
	if n == 0 {
		return dst
	}
	at := len(dst)
	dst = append(dst, make([]byte, n)...)
	for r := 0; r < s.Rows; r++ {
		if isZero(src[r*s.Cols : (r+1)*s.Cols]) {
			dst[at+r/8] |= 1 << (r % 8)
		}
	}
	return dst
}

// applyZeroMap zeroes the rows of dst marked in zmap.
func applyZeroMap(dst []float32, s Shape, zmap []byte) {
	if len(zmap) == 0 {
		return
	}
	for r := 0; r < s.Rows; r++ {
		if zmap[r/8]&(1<<(r%8)) != 0 {
			clear(dst[r*s.Cols : (r+1)*s.Cols])
		}
	}
}

func isZero(v []float32) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}
