package ring

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// The raw data path: with a RawWireCodec the wire bytes of a sub-chunk are
// its float32 values in little-endian order, so on a little-endian machine
// the ring sends the tensor's own memory and reads received payloads as
// float32 in place. These helpers are the only code that looks at float32
// memory as bytes.

// littleEndian is true when the machine stores float32 as the wire does.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// wireOf returns the wire bytes of x: x's own memory on a little-endian
// machine (no copy), else a fresh encoded copy.
func wireOf(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
	}
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// floatsOf returns p (4*n bytes) as n float32 values without copying, or
// nil when p cannot be viewed in place (a big-endian machine or a payload
// not aligned to 4 bytes).
func floatsOf(p []byte) []float32 {
	if !littleEndian || len(p) < 4 || uintptr(unsafe.Pointer(&p[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&p[0])), len(p)/4)
}

// expMask selects a float32's exponent; all ones is Inf or NaN. For a value
// v, (bits(v)&expMask)+expOne sets bit 31 exactly when v is not finite, so
// OR-ing that over a slice tests every value without a branch per value.
const (
	expMask = 0x7f800000
	expOne  = 0x00800000
)

// firstNonFinite returns the index of the first NaN or Inf in x, or -1.
func firstNonFinite(x []float32) int {
	// Four independent accumulators: the OR chain of one would bound the
	// loop at one value per cycle of latency.
	var a0, a1, a2, a3 uint32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		a0 |= math.Float32bits(v[0])&expMask + expOne
		a1 |= math.Float32bits(v[1])&expMask + expOne
		a2 |= math.Float32bits(v[2])&expMask + expOne
		a3 |= math.Float32bits(v[3])&expMask + expOne
	}
	for ; i < len(x); i++ {
		a0 |= math.Float32bits(x[i])&expMask + expOne
	}
	if (a0|a1|a2|a3)&0x80000000 == 0 {
		return -1
	}
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i
		}
	}
	return -1
}

// addWire adds the little-endian float32 values in p (4*len(dst) bytes) to
// dst in one pass and returns the index of the first sum that is NaN or
// Inf, or -1. The check rides along with the add: no second pass.
func addWire(dst []float32, p []byte) int {
	var acc uint32
	if src := floatsOf(p); src != nil {
		src = src[:len(dst)]
		i := 0
		for ; i+4 <= len(dst); i += 4 {
			s := dst[i : i+4 : i+4]
			t := src[i : i+4 : i+4]
			a, b, c, d := s[0]+t[0], s[1]+t[1], s[2]+t[2], s[3]+t[3]
			s[0], s[1], s[2], s[3] = a, b, c, d
			acc |= (math.Float32bits(a)&expMask + expOne) | (math.Float32bits(b)&expMask + expOne) |
				(math.Float32bits(c)&expMask + expOne) | (math.Float32bits(d)&expMask + expOne)
		}
		for ; i < len(dst); i++ {
			v := dst[i] + src[i]
			dst[i] = v
			acc |= math.Float32bits(v)&expMask + expOne
		}
	} else {
		p = p[:4*len(dst)]
		for i := range dst {
			v := dst[i] + math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
			dst[i] = v
			acc |= math.Float32bits(v)&expMask + expOne
		}
	}
	if acc&0x80000000 == 0 {
		return -1
	}
	return firstNonFinite(dst)
}

// copyWire stores the little-endian float32 values in p (4*len(dst) bytes)
// in dst.
func copyWire(dst []float32, p []byte) {
	if littleEndian {
		copy(wireOf(dst), p)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
	}
}
