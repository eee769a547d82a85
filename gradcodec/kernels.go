package gradcodec

import (
	"encoding/binary"
	"math"
	"unsafe"

	"github.com/vccl/vccl/internal/kern"
)

// The loops of the simple codecs (raw, fp16, bf16, int8). Each is one pass
// over the values with the finite check folded in, written for the
// compiler: no per-value append, bounds checks hoisted, branch-free
// conversions. On little-endian machines that tolerate unaligned loads
// (unalignedLE, see le_*.go) the payload is read and written through
// reinterpreted slices; elsewhere through encoding/binary.

// nonFiniteBit is 1<<31 after adding 0x00800000 to a float32's exponent
// bits exactly when the exponent is all ones (NaN or ±Inf).
func nonFiniteBit(bits uint32) uint32 { return (bits&0x7f800000 + 0x00800000) & 0x80000000 }

// u16s returns b (even length) as little-endian uint16 values; only when
// unalignedLE.
func u16s(b []byte) []uint16 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

// f32bytes returns the bytes of v in memory order.
func f32bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// putRaw writes src as little-endian float32 into b (4·len(src) bytes) and
// reports whether every value is finite.
func putRaw(b []byte, src []float32) bool {
	b = b[:4*len(src)]
	if unalignedLE {
		copy(b, f32bytes(src))
		return kern.AllFinite(src)
	}
	var bad uint32
	for i, v := range src {
		u := math.Float32bits(v)
		bad |= nonFiniteBit(u)
		binary.LittleEndian.PutUint32(b[4*i:], u)
	}
	return bad == 0
}

// getRaw reads little-endian float32 values from b into dst and reports
// whether every value is finite.
func getRaw(dst []float32, b []byte) bool {
	b = b[:4*len(dst)]
	if unalignedLE {
		copy(f32bytes(dst), b)
		return kern.AllFinite(dst)
	}
	var bad uint32
	for i := range dst {
		u := binary.LittleEndian.Uint32(b[4*i:])
		bad |= nonFiniteBit(u)
		dst[i] = math.Float32frombits(u)
	}
	return bad == 0
}

// putFP16 writes src as IEEE half precision into b (2·len(src) bytes) and
// reports whether every value is finite.
func putFP16(b []byte, src []float32) bool {
	b = b[:2*len(src)]
	if unalignedLE {
		return kern.EncodeFP16(u16s(b), src)
	}
	var bad uint32
	for i, v := range src {
		bad |= nonFiniteBit(math.Float32bits(v))
		binary.LittleEndian.PutUint16(b[2*i:], toFP16(v))
	}
	return bad == 0
}

// getFP16 decodes halves from b into dst and reports whether every value is
// finite.
func getFP16(dst []float32, b []byte) bool {
	b = b[:2*len(dst)]
	if unalignedLE {
		return kern.DecodeFP16(dst, u16s(b))
	}
	var bad uint32
	for i := range dst {
		h := binary.LittleEndian.Uint16(b[2*i:])
		bad |= (uint32(h)&0x7fff + 0x0400) & 0x8000
		dst[i] = fromFP16(h)
	}
	return bad == 0
}

// putBF16 writes src as bfloat16 into b (2·len(src) bytes) and reports
// whether every value is finite.
func putBF16(b []byte, src []float32) bool {
	b = b[:2*len(src)]
	if unalignedLE {
		return kern.EncodeBF16(u16s(b), src)
	}
	var bad uint32
	for i, v := range src {
		u := math.Float32bits(v)
		bad |= nonFiniteBit(u)
		binary.LittleEndian.PutUint16(b[2*i:], uint16((u+0x7fff+(u>>16)&1)>>16))
	}
	return bad == 0
}

// getBF16 decodes bfloat16 values from b into dst and reports whether every
// value is finite.
func getBF16(dst []float32, b []byte) bool {
	b = b[:2*len(dst)]
	if unalignedLE {
		return kern.DecodeBF16(dst, u16s(b))
	}
	var bad uint32
	for i := range dst {
		u := uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16
		bad |= nonFiniteBit(u)
		dst[i] = math.Float32frombits(u)
	}
	return bad == 0
}

// GroupScale returns the bfloat16 scale mult·min(k·RMS, max|x|) of the
// values in grp, computed in one float32 pass, or ok false when grp holds
// NaN or ±Inf. A group of zeros, or one whose scale underflows or
// overflows, gets 0. The int8 and video codecs quantise each scale group
// with it right before writing the group's levels.
func GroupScale(grp []float32, k, mult float32) (h uint16, ok bool) {
	ss, mb := kern.SumSqMaxAbs(grp)
	return ScaleFromStats(ss, mb, len(grp), k, mult)
}

// ScaleFromStats is GroupScale from a group's Σx², max|x| as float32 bits
// (NaN and ±Inf at or above 0x7f800000) and length, for a caller that
// gathered them in a pass of its own.
func ScaleFromStats(ss float32, mb uint32, n int, k, mult float32) (h uint16, ok bool) {
	if mb >= 0x7f800000 {
		return 0, false // NaN or ±Inf
	}
	if mb == 0 {
		return 0, true
	}
	mx := math.Float32frombits(mb)
	sc := k * float32(math.Sqrt(float64(ss)/float64(n)))
	if sc > mx || ss > math.MaxFloat32 { // an overflowed ss leaves max|x|
		sc = mx
	}
	h = ToBF16(sc * mult)
	if v := FromBF16(h); v == 0 || v > math.MaxFloat32 {
		h = 0
	}
	return h, true
}

// putInt8 quantises src to int8 levels into b (len(src) bytes), one scale
// group at a time: the group's scale (into scales) and its levels in the
// same visit. zmap, when not nil, receives the zero-row bitmap. It reports
// whether every value is finite.
func putInt8(b []byte, scales []uint16, zmap []byte, src []float32, s Shape) bool {
	b = b[:len(src)]
	g := ScaleGroupRows(s)
	span := g * s.Cols
	clear(zmap)
	for gi := range scales {
		lo := gi * span
		hi := min(lo+span, len(src))
		grp := src[lo:hi]
		out := b[lo:hi]
		out = out[:len(grp)]
		h, ok := GroupScale(grp, Int8RMSMultiple, 1)
		if !ok {
			return false
		}
		scales[gi] = h
		if zmap != nil {
			for r := gi * g; r < min((gi+1)*g, s.Rows); r++ {
				if IsZero(src[r*s.Cols : (r+1)*s.Cols]) {
					zmap[r/8] |= 1 << (r % 8)
				}
			}
		}
		if h == 0 {
			clear(out)
			continue
		}
		kern.QuantI8(out, grp, 127/FromBF16(h))
	}
	return true
}

// getInt8 dequantises int8 levels from b into dst with one scale per group
// of rows. The values are finite whenever the scales are.
func getInt8(dst []float32, b []byte, scales []float32, s Shape) {
	b = b[:len(dst)]
	span := ScaleGroupRows(s) * s.Cols
	for gi, sc := range scales {
		lo := gi * span
		hi := min(lo+span, len(dst))
		out := dst[lo:hi]
		in := b[lo:hi]
		in = in[:len(out)]
		kern.DequantI8(out, in, sc/127)
	}
}
