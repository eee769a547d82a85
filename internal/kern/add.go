package kern

import "math"

// AddFinite adds src to dst (dst[i] += src[i] for i < len(dst); src must
// be at least as long) and reports whether every sum is finite (no NaN, no
// ±Inf, so an overflow of the sum counts too). The check rides along with
// the add: one pass over both slices. The sums are bit-identical to the Go
// loop's (float32 addition is exact IEEE either way).
func AddFinite(dst, src []float32) bool {
	src = src[:len(dst)]
	i := 0
	var bad uint32
	if useAVX2 && len(dst) >= 8 {
		n := len(dst) &^ 7
		if !addFiniteAVX2(&dst[0], &src[0], n) {
			bad = 1 << 31
		}
		i = n
	}
	return addFiniteGo(dst[i:], src[i:], bad) == 0
}

// addFiniteGo is AddFinite's loop: it returns bad with bit 31 set by any
// non-finite sum.
func addFiniteGo(dst, src []float32, bad uint32) uint32 {
	src = src[:len(dst)]
	i := 0
	// Four independent accumulators: one OR chain would bound the loop at
	// one value per cycle of latency.
	var b0, b1, b2, b3 uint32
	for ; i+4 <= len(dst); i += 4 {
		d := dst[i : i+4 : i+4]
		s := src[i : i+4 : i+4]
		v0, v1, v2, v3 := d[0]+s[0], d[1]+s[1], d[2]+s[2], d[3]+s[3]
		d[0], d[1], d[2], d[3] = v0, v1, v2, v3
		b0 |= nonFiniteBit(math.Float32bits(v0))
		b1 |= nonFiniteBit(math.Float32bits(v1))
		b2 |= nonFiniteBit(math.Float32bits(v2))
		b3 |= nonFiniteBit(math.Float32bits(v3))
	}
	for ; i < len(dst); i++ {
		v := dst[i] + src[i]
		dst[i] = v
		b0 |= nonFiniteBit(math.Float32bits(v))
	}
	return bad | b0 | b1 | b2 | b3
}
