// Package metric holds the error measures that vccl's tests and examples
// compare a lossy allreduce with.
package metric

// NMSE returns the normalized mean squared error of got against the exact
// result want, ‖got−want‖²/‖want‖², or the plain squared error ‖got−want‖²
// where want is all zeros. got must be at least as long as want.
func NMSE(got []float32, want []float64) float64 {
	var num, den float64
	for i, w := range want {
		d := float64(got[i]) - w
		num += d * d
		den += w * w
	}
	if den == 0 {
		return num
	}
	return num / den
}

// NMSE32 is NMSE of got against a float32 reference want: ‖got−want‖²/‖want‖²
// (the plain squared error where want is all zeros). got must be at least
// as long as want.
func NMSE32(got, want []float32) float64 {
	var num, den float64
	for i, w := range want {
		d := float64(got[i]) - float64(w)
		num += d * d
		den += float64(w) * float64(w)
	}
	if den == 0 {
		return num
	}
	return num / den
}
