package video

import "math"

// controlToQP splits the continuous rate control value s into an integer QP
// and a multiplier of the scales: the effective quantizer step relative to
// the values grows as 2^(s/6), like the codec's step per QP, so rate and
// error are smooth in s between integer QPs.
// QPs below minQP (the lowest the encoder takes) are made up by the
// multiplier alone.
func controlToQP(s float64, minQP int) (int, float64) {
	qp := int(math.Floor(s))
	qp = min(max(qp, minQP), maxQP)
	return qp, math.Exp2((s - float64(qp)) / 6)
}

// rateControl tracks one stream's control value s (a continuous QP, see
// controlToQP) and how the payload rate responds to it.
type rateControl struct {
	s       float64
	slope   float64 // decrease of log2(payload bits per value) per unit of s
	started bool
	hasPrev bool
	prevS   float64
	prevR   float64
}

// Measured starting points (see doc.go): the control value that gives about
// 1.4 bits per value on gradient-like tensors, and the slope near it.
func newRateControl(codec string, target float64) *rateControl {
	// QPs of the I pictures: libavcodec's wrappers used to lower the QP
	// asked for by 6·log2(1.4) ≈ 3 on I pictures; these are the values
	// measured then (38 and 37) less 3.
	s0, slope := 35.0, 0.2
	if codec == "hevc" {
		s0 = 34
	}
	// Move the start by the default slope for targets other than 1.4.
	s0 -= math.Log2(target/1.4) / slope
	return &rateControl{s: s0, slope: slope}
}

// observe records that control value s gave payload rate r and refines the
// slope from the previous observation, giving the new estimate weight w.
func (rc *rateControl) observe(s, r, w float64) {
	if r <= 0 {
		return
	}
	if rc.hasPrev && math.Abs(s-rc.prevS) > 0.3 && rc.prevR > 0 {
		est := (math.Log2(rc.prevR) - math.Log2(r)) / (s - rc.prevS)
		est = min(max(est, 0.05), 0.4)
		rc.slope = (1-w)*rc.slope + w*est
	}
	rc.hasPrev, rc.prevS, rc.prevR = true, s, r
}

// next returns the control value expected to reach payload rate tp from
// the observation (s, r).
func (rc *rateControl) next(s, r, tp float64) float64 {
	if r <= 0 {
		r = tp / 4
	}
	step := math.Log2(r/tp) / rc.slope
	step = min(max(step, -12), 12)
	return min(max(s+step, -18), maxQP+24)
}
