package gradcodec

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"math/rand/v2"
)

// gradientLike returns a seeded rows×cols tensor shaped like a weight
// gradient of a ReLU layer: a sum over a small batch of outer products of
// heavy-tailed output deltas and sparse non-negative inputs, with dead
// units (zero rows) and inputs that are always zero (zero columns).
func gradientLike(seed uint64, rows, cols int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	const batch = 16
	deltas := make([]float64, rows*batch)
	for r := 0; r < rows; r++ {
		if rng.Float64() < 0.1 { // dead unit
			continue
		}
		unit := math.Exp(rng.NormFloat64()) // per-unit scale
		for b := 0; b < batch; b++ {
			if rng.Float64() < 0.5 {
				continue // ReLU inactive for this sample
			}
			t := rng.NormFloat64() / math.Sqrt(rng.ExpFloat64()) // heavy tail
			deltas[r*batch+b] = unit * t * 1e-3
		}
	}
	inputs := make([]float64, batch*cols)
	for c := 0; c < cols; c++ {
		if rng.Float64() < 0.15 { // input that is always zero
			continue
		}
		for b := 0; b < batch; b++ {
			if rng.Float64() < 0.6 {
				inputs[b*cols+c] = rng.Float64()
			}
		}
	}
	out := make([]float32, rows*cols)
	for r := 0; r < rows; r++ {
		for b := 0; b < batch; b++ {
			d := deltas[r*batch+b]
			if d == 0 {
				continue
			}
			for c := 0; c < cols; c++ {
				out[r*cols+c] += float32(d * inputs[b*cols+c])
			}
		}
	}
	return out
}

// nmse returns ‖x−y‖²/‖x‖².
func nmse(x, y []float32) float64 {
	var num, den float64
	for i := range x {
		d := float64(x[i]) - float64(y[i])
		num += d * d
		den += float64(x[i]) * float64(x[i])
	}
	if den == 0 {
		return num
	}
	return num / den
}

// fixChecksum rewrites the CRC of a frame after it was edited.
func fixChecksum(fr []byte) {
	if len(fr) < TrailerSize {
		return
	}
	body := fr[:len(fr)-TrailerSize]
	binary.LittleEndian.PutUint32(fr[len(fr)-TrailerSize:], crc32.Checksum(body, crcTable))
}
