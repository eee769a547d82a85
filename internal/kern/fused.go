package kern

import "math"

// AddSumSqMaxAbs adds x into r (r[i] = x[i] + r[i], as AddTo2) and returns
// SumSqMaxAbs of the sums, in one pass (len(x) >= len(r)); the results are
// those of AddTo2 followed by SumSqMaxAbs.
func AddSumSqMaxAbs(r, x []float32) (ss float32, maxAbs uint32) {
	x = x[:len(r)]
	i := 0
	if useAVX2 && len(r) >= 8 {
		n := len(r) &^ 7
		ss, maxAbs = addSumSqMaxAbsAVX2(&r[0], &x[0], n)
		i = n
	}
	for ; i < len(r); i++ {
		r[i] = x[i] + r[i]
	}
	start := 0
	if useAVX2 && len(r) >= 8 {
		start = len(r) &^ 7
	}
	for _, v := range r[start:] { // as SumSqMaxAbs's tail
		ss += v * v
		if u := math.Float32bits(v) & 0x7fffffff; u > maxAbs {
			maxAbs = u
		}
	}
	return ss, maxAbs
}

// DotLevels2 is DotLevels of two rows of the same length at once (their
// dependency chains interleaved): the results are those of DotLevels on
// each.
func DotLevels2(x0 []float32, q0 []byte, x1 []float32, q1 []byte) (dot0 float32, qq0 int32, dot1 float32, qq1 int32) {
	n := len(x0)
	if !useAVX2 || n < 8 || len(x1) != n {
		dot0, qq0 = DotLevels(x0, q0)
		dot1, qq1 = DotLevels(x1, q1)
		return
	}
	q0, q1 = q0[:n], q1[:n]
	b := n &^ 7
	dot0, qq0, dot1, qq1 = dotLevels2AVX2(&x0[0], &q0[0], &x1[0], &q1[0], b)
	for i := b; i < n; i++ { // as DotLevels's tail
		a := int32(q0[i]) - 128
		dot0 += x0[i] * float32(a)
		qq0 += a * a
	}
	for i := b; i < n; i++ {
		a := int32(q1[i]) - 128
		dot1 += x1[i] * float32(a)
		qq1 += a * a
	}
	return
}
