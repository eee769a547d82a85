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
