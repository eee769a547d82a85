package gradcodec

import (
	"encoding/binary"
	"math"
)

// The helpers every package shares for float32 data: one implementation
// each of the little-endian wire form, the NaN/Inf scan and the near-square
// layout.

// AppendFloat32s appends src to dst as little-endian IEEE-754 float32 (the
// raw wire form) and returns the extended slice.
func AppendFloat32s(dst []byte, src []float32) []byte {
	if unalignedLE {
		return append(dst, f32bytes(src)...) // one bulk copy
	}
	for _, v := range src {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

// Float32sFromBytes fills dst from src, little-endian float32; src must hold
// at least 4*len(dst) bytes.
func Float32sFromBytes(dst []float32, src []byte) {
	_ = src[:4*len(dst)]
	if unalignedLE {
		copy(f32bytes(dst), src) // one bulk copy
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// FirstNonFinite returns the index of the first NaN or ±Inf in x, or -1.
func FirstNonFinite(x []float32) int {
	for i, v := range x {
		// NaN and ±Inf have an all-ones exponent.
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}

// NearSquare lays n values out as rows × cols with cols the smallest
// multiple of 16 at or above sqrt(n), and returns the layout of the whole
// rows and the tail (< cols) of values left over; for n < 16 the layout is
// empty and the tail is n.
func NearSquare(n int) (Shape, int) {
	if n <= 0 {
		return Shape{}, 0
	}
	cols := (int(math.Ceil(math.Sqrt(float64(n)))) + 15) &^ 15
	if cols > n {
		return Shape{}, n
	}
	rows := n / cols
	return Shape{Rows: rows, Cols: cols}, n - rows*cols
}
