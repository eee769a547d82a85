package gradcodec

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/vccl/vccl/internal/kern"
)

// CheckFinite returns an error wrapping ErrNonFinite when src holds NaN or
// ±Inf, stating how many values are bad and where the first one is.
func CheckFinite(codec string, src []float32) error {
	first := FirstNonFinite(src)
	if first < 0 {
		return nil
	}
	count := 0
	for _, v := range src[first:] {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			count++
		}
	}
	return fmt.Errorf("%s: %w: %d of %d values are NaN or Inf, first at index %d (%v)",
		codec, ErrNonFinite, count, len(src), first, src[first])
}

// CheckShape verifies that src holds shape.Len() values of a sane shape; the
// error wraps ErrShapeMismatch and starts with codec.
func CheckShape(codec string, src []float32, shape Shape) error {
	if shape.Rows < 0 || shape.Cols < 0 || (shape.Rows == 0) != (shape.Cols == 0) {
		return fmt.Errorf("%s: %w: invalid shape %dx%d", codec, ErrShapeMismatch, shape.Rows, shape.Cols)
	}
	if uint64(shape.Rows)*uint64(shape.Cols) >= maxValues {
		return fmt.Errorf("%s: %w: shape %dx%d exceeds %d values", codec, ErrShapeMismatch, shape.Rows, shape.Cols, maxValues-1)
	}
	if len(src) != shape.Len() {
		return fmt.Errorf("%s: %w: %d values for shape %dx%d (%d values)", codec, ErrShapeMismatch, len(src), shape.Rows, shape.Cols, shape.Len())
	}
	return nil
}

// ShapeFor returns a near-square layout for n values of 1-D data: Cols is
// the smallest multiple of 16 not below sqrt(n) (or n itself when n < 16),
// Rows = n / Cols when that divides, otherwise the layout is 1 × n. The
// result always has Len() == n.
func ShapeFor(n int) Shape {
	if n <= 0 {
		return Shape{}
	}
	s, tail := NearSquare(n)
	if tail == 0 && s.Rows > 0 && s.Cols <= 4096 {
		return s
	}
	for c := s.Cols + 16; s.Cols > 0 && c <= n && c <= 4096; c += 16 {
		if n%c == 0 {
			return Shape{n / c, c}
		}
	}
	return Shape{1, n}
}

// ToBF16 converts f to bfloat16 bits, rounding to nearest even.
func ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it a NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// FromBF16 converts bfloat16 bits to float32 (exactly).
func FromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// toFP16 converts to IEEE half precision, rounding to nearest even and
// saturating finite values beyond ±65504 to ±65504 (NaN and ±Inf too; the
// encoders reject them first).
func toFP16(f float32) uint16 { return kern.ToFP16(f) }

// fromFP16 converts IEEE half precision to float32 (exactly).
func fromFP16(h uint16) float32 { return kern.FromFP16(h) }

// PutScales appends scales (bfloat16 bits) to dst as little-endian uint16.
func PutScales(dst []byte, scales []uint16) []byte {
	for _, h := range scales {
		dst = binary.LittleEndian.AppendUint16(dst, h)
	}
	return dst
}

// readScales decodes n bfloat16 scales from b and checks they are finite
// and not negative.
func readScales(dst []float32, b []byte) error {
	for i := range dst {
		v := FromBF16(binary.LittleEndian.Uint16(b[2*i:]))
		if !(v >= 0) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: scale %d is %v", ErrBadFrame, i, v)
		}
		dst[i] = v
	}
	return nil
}
