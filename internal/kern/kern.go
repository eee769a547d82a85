// Package kern holds the float32 loops of vccl's codecs, with AVX2
// versions on amd64 (x/sys/cpu says AVX2 and FMA; every such CPU also has
// F16C) and pure-Go ones elsewhere and for the tails. The assembly handles
// whole blocks of 8 values; the Go code finishes the rest. Results are
// bit-identical to the Go loops, except the sums (SumSqMaxAbs, DotLevels),
// whose order of addition differs.
package kern

import (
	"math"
	"unsafe"
)

// SumSqMaxAbs returns Σx² and the largest |x| as float32 bits (the bits
// order like the values; NaN and ±Inf give bits >= 0x7f800000).
func SumSqMaxAbs(x []float32) (ss float32, maxAbs uint32) {
	i := 0
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		ss, maxAbs = sumSqMaxAbsAVX2(&x[0], n)
		i = n
	}
	for _, v := range x[i:] {
		ss += v * v
		if u := math.Float32bits(v) & 0x7fffffff; u > maxAbs {
			maxAbs = u
		}
	}
	return ss, maxAbs
}

// QuantU8 writes the 8-bit video levels of x into out: x·inv+128.5
// clamped to [1, 255.5] and truncated, so 128 is zero.
func QuantU8(out []byte, x []float32, inv float32) {
	out = out[:len(x)]
	i := 0
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		quantU8AVX2(&out[0], &x[0], n, inv)
		i = n
	}
	for ; i < len(x); i++ {
		f := x[i]*inv + 128.5
		if f < 1 {
			f = 1
		}
		if f > 255.5 {
			f = 255.5
		}
		out[i] = byte(int32(f))
	}
}

// DotLevels returns Σx·(q−128) and Σ(q−128)² over a row of values and
// their 8-bit levels (len(q) >= len(x), at most 1<<16 values so that
// Σ(q−128)² fits in int32: 1<<17 levels of −128 would reach 2^31).
func DotLevels(x []float32, q []byte) (dot float32, qq int32) {
	q = q[:len(x)]
	i := 0
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		dot, qq = dotLevelsAVX2(&x[0], &q[0], n)
		i = n
	}
	for ; i < len(x); i++ {
		a := int32(q[i]) - 128
		dot += x[i] * float32(a)
		qq += a * a
	}
	return dot, qq
}

// DequantU8 writes (q−128)·m into dst.
func DequantU8(dst []float32, q []byte, m float32) {
	q = q[:len(dst)]
	i := 0
	if useAVX2 && len(dst) >= 8 {
		n := len(dst) &^ 7
		dequantU8AVX2(&dst[0], &q[0], n, m)
		i = n
	}
	for ; i < len(dst); i++ {
		dst[i] = float32(int32(q[i])-128) * m
	}
}

// DequantU8NT is DequantU8 (the same values) with non-temporal stores
// where the assembly runs: the values go to memory without displacing the
// cache, and without first reading the lines they overwrite, for outputs
// far larger than the cache that nothing reads soon. Call StoreFence after
// the last DequantU8NT and before dst is handed to another goroutine.
func DequantU8NT(dst []float32, q []byte, m float32) {
	q = q[:len(dst)]
	i := 0
	if useAVX2 && len(dst) >= 64 {
		// Plain stores up to a 32-byte boundary, then blocks of 32.
		head := int((32 - uintptr(unsafe.Pointer(&dst[0]))%32) % 32 / 4)
		if uintptr(unsafe.Pointer(&dst[0]))%4 != 0 {
			head = len(dst) // not float-aligned: no streaming
		}
		if head < len(dst) {
			DequantU8(dst[:head], q[:head], m)
			n := (len(dst) - head) &^ 31
			if n > 0 {
				dequantU8NTAVX2(&dst[head], &q[head], n, m)
			}
			i = head + n
		}
	}
	DequantU8(dst[i:], q[i:], m)
}

// StoreFence orders the non-temporal stores of DequantU8NT before every
// later store (SFENCE).
func StoreFence() {
	if useAVX2 {
		storeFence()
	}
}

// DequantResidual writes (q−128)·m into recon and x − recon into res in
// one pass (len(q), len(x), len(res) >= len(recon)).
func DequantResidual(recon, res []float32, q []byte, x []float32, m float32) {
	res, q, x = res[:len(recon)], q[:len(recon)], x[:len(recon)]
	i := 0
	if useAVX2 && len(recon) >= 8 {
		n := len(recon) &^ 7
		dequantResidualAVX2(&recon[0], &res[0], &q[0], &x[0], n, m)
		i = n
	}
	for ; i < len(recon); i++ {
		v := float32(int32(q[i])-128) * m
		recon[i] = v
		res[i] = x[i] - v
	}
}

// ResidualU8 writes x − (q−128)·m into res (len(q), len(x) >= len(res)):
// DequantResidual's residual, bit for bit, without writing the
// reconstruction. x may be res itself.
func ResidualU8(res []float32, q []byte, x []float32, m float32) {
	q, x = q[:len(res)], x[:len(res)]
	i := 0
	if useAVX2 && len(res) >= 8 {
		n := len(res) &^ 7
		residualU8AVX2(&res[0], &q[0], &x[0], n, m)
		i = n
	}
	for ; i < len(res); i++ {
		res[i] = x[i] - float32(int32(q[i])-128)*m
	}
}

// AddTo adds r to x element-wise (len(r) >= len(x)).
func AddTo(x, r []float32) {
	r = r[:len(x)]
	i := 0
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		addToAVX2(&x[0], &r[0], n)
		i = n
	}
	for ; i < len(x); i++ {
		x[i] += r[i]
	}
}

// AddTo2 writes a+b into dst (len(a), len(b) >= len(dst)).
func AddTo2(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	i := 0
	if useAVX2 && len(dst) >= 8 {
		n := len(dst) &^ 7
		addTo2AVX2(&dst[0], &a[0], &b[0], n)
		i = n
	}
	for ; i < len(dst); i++ {
		dst[i] = a[i] + b[i]
	}
}

// SubTo writes a−b into dst (len(a), len(b) >= len(dst)).
func SubTo(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	i := 0
	if useAVX2 && len(dst) >= 8 {
		n := len(dst) &^ 7
		subToAVX2(&dst[0], &a[0], &b[0], n)
		i = n
	}
	for ; i < len(dst); i++ {
		dst[i] = a[i] - b[i]
	}
}

// nonFiniteBit is 1<<31 exactly when bits is a NaN or ±Inf.
func nonFiniteBit(bits uint32) uint32 { return (bits&0x7f800000 + 0x00800000) & 0x80000000 }

// AllFinite reports whether x holds no NaN or ±Inf.
func AllFinite(x []float32) bool {
	i := 0
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		if !allFiniteAVX2(&x[0], n) {
			return false
		}
		i = n
	}
	var bad uint32
	for _, v := range x[i:] {
		bad |= nonFiniteBit(math.Float32bits(v))
	}
	return bad == 0
}

// ToFP16 converts one value to IEEE half precision, rounding to nearest
// even and saturating beyond ±65504 (NaN and ±Inf too).
func ToFP16(f float32) uint16 {
	b := math.Float32bits(f)
	abs := b & 0x7fffffff
	h := (abs - 0x38000000 + 0xfff + abs>>13&1) >> 13
	sub := math.Float32bits(math.Float32frombits(abs)+0.5) - 0x3f000000
	if abs < 0x38800000 {
		h = sub
	}
	if abs >= 0x477ff000 {
		h = 0x7bff
	}
	return uint16(b>>16&0x8000 | h)
}

// FromFP16 converts a half to float32 exactly.
func FromFP16(h uint16) float32 {
	em := uint32(h) & 0x7fff
	f := math.Float32bits(float32(em) * (1.0 / (1 << 24)))
	if em >= 0x400 {
		f = em<<13 + 0x38000000
	}
	if em >= 0x7c00 {
		f = 0x7f800000 | em<<13
	}
	return math.Float32frombits(uint32(h&0x8000)<<16 | f)
}

// EncodeFP16 converts x to halves in out and reports whether x was all
// finite.
func EncodeFP16(out []uint16, x []float32) bool {
	out = out[:len(x)]
	i := 0
	ok := true
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		ok = encodeFP16AVX2(&out[0], &x[0], n)
		i = n
	}
	var bad uint32
	for ; i < len(x); i++ {
		bad |= nonFiniteBit(math.Float32bits(x[i]))
		out[i] = ToFP16(x[i])
	}
	return ok && bad == 0
}

// DecodeFP16 converts halves to float32 and reports whether all are
// finite.
func DecodeFP16(dst []float32, h []uint16) bool {
	h = h[:len(dst)]
	i := 0
	ok := true
	if useAVX2 && len(dst) >= 8 {
		n := len(dst) &^ 7
		ok = decodeFP16AVX2(&dst[0], &h[0], n)
		i = n
	}
	var bad uint32
	for ; i < len(dst); i++ {
		bad |= (uint32(h[i])&0x7fff + 0x0400) & 0x8000
		dst[i] = FromFP16(h[i])
	}
	return ok && bad == 0
}

// EncodeBF16 converts x to bfloat16 (round to nearest even) in out and
// reports whether x was all finite.
func EncodeBF16(out []uint16, x []float32) bool {
	out = out[:len(x)]
	i := 0
	ok := true
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		ok = encodeBF16AVX2(&out[0], &x[0], n)
		i = n
	}
	var bad uint32
	for ; i < len(x); i++ {
		u := math.Float32bits(x[i])
		bad |= nonFiniteBit(u)
		out[i] = uint16((u + 0x7fff + (u>>16)&1) >> 16)
	}
	return ok && bad == 0
}

// DecodeBF16 converts bfloat16 values to float32 and reports whether all
// are finite.
func DecodeBF16(dst []float32, h []uint16) bool {
	h = h[:len(dst)]
	i := 0
	ok := true
	if useAVX2 && len(dst) >= 8 {
		n := len(dst) &^ 7
		ok = decodeBF16AVX2(&dst[0], &h[0], n)
		i = n
	}
	var bad uint32
	for ; i < len(dst); i++ {
		u := uint32(h[i]) << 16
		bad |= nonFiniteBit(u)
		dst[i] = math.Float32frombits(u)
	}
	return ok && bad == 0
}

// QuantI8 writes the int8 levels of x into out: x·inv clamped to
// [−127, 127], rounded half away from zero.
func QuantI8(out []byte, x []float32, inv float32) {
	out = out[:len(x)]
	i := 0
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		quantI8AVX2(&out[0], &x[0], n, inv)
		i = n
	}
	for ; i < len(x); i++ {
		q := x[i] * inv
		if q > 127 {
			q = 127
		}
		if q < -127 {
			q = -127
		}
		half := math.Float32frombits(math.Float32bits(q)&0x80000000 | 0x3f000000)
		out[i] = byte(int32(q + half))
	}
}

// DequantI8 writes int8(q)·m into dst.
func DequantI8(dst []float32, q []byte, m float32) {
	q = q[:len(dst)]
	i := 0
	if useAVX2 && len(dst) >= 8 {
		n := len(dst) &^ 7
		dequantI8AVX2(&dst[0], &q[0], n, m)
		i = n
	}
	for ; i < len(dst); i++ {
		dst[i] = float32(int8(q[i])) * m
	}
}

// QuantDZ writes the dead-zone levels q = sign(x)·floor(|x|·inv + theta)
// of x into out as int8 bytes and reports whether every |q| is at most
// 127; when it is not (or x holds NaN), out is unspecified and the caller
// quantises again. theta must be in [0, 1).
func QuantDZ(out []byte, x []float32, inv, theta float32) bool {
	out = out[:len(x)]
	i := 0
	ok := true
	if useAVX2 && len(x) >= 8 {
		n := len(x) &^ 7
		ok = quantDZAVX2(&out[0], &x[0], n, inv, theta) <= 127
		i = n
	}
	for ; i < len(x); i++ {
		b := math.Float32bits(x[i])
		// x·inv + θ·sign(x) truncated: exactly sign(x)·floor(|x|·inv + θ),
		// IEEE rounding being symmetric in sign.
		a := x[i]*inv + math.Float32frombits(math.Float32bits(theta)|b&0x80000000)
		if !(a > -128 && a < 128) {
			ok = false
			continue
		}
		out[i] = byte(int32(a))
	}
	return ok
}
