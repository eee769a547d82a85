package collective

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/vccl/vccl/internal/metric"
)

// TestLoopbackTensorCodec runs the pure-Go tensor codec through the ring
// over real loopback workers: every rank must end bit-identical (the owner
// keeps the decoded value, the allgather forwards its bytes), at about the
// target rate, and error feedback must keep the average of several steps
// close to the average of the exact sums.
func TestLoopbackTensorCodec(t *testing.T) {
	ctx := context.Background()
	const size, rows, cols, steps = 4, 128, 512, 4
	comms := loopbackWorld(t, size, func(c *Config) { c.WarmupSteps = 0; c.Codec = "tensor"; c.BitsPerValue = 1.4 })
	var meanOut, meanExact []float64
	var first float64
	for step := 0; step < steps; step++ {
		outs := make([][]float32, size)
		sts := make([]Stats, size)
		noErrors(t, each(comms, func(r int, c *Comm) error {
			x := rankGrad(900, r, rows, cols) // the same gradient every step
			st, err := c.AllReduce(ctx, x, WithShape(rows, cols), WithStream("w"), WithAverage())
			outs[r], sts[r] = x, st
			return err
		}))
		sameOnAllRanks(t, fmt.Sprintf("step %d", step), outs)
		exact := exactSumOf(size, func(r int) []float32 { return rankGrad(900, r, rows, cols) }, true)
		e := metric.NMSE(outs[0], exact)
		bpv := sts[0].BitsPerValue()
		t.Logf("step %d: codec %s NMSE %.3g, %.3f bits/value", step, sts[0].Codec, e, bpv)
		// Step 0 carries one step's coding error; later steps also the
		// last step's residual that error feedback sends along.
		bound := 0.15
		if step > 0 {
			bound = 0.5
		}
		if sts[0].Codec != "tensor" || math.IsNaN(e) || e > bound || bpv < 1.2 || bpv > 1.7 {
			t.Fatalf("step %d: codec %s NMSE %g at %.3f bits/value", step, sts[0].Codec, e, bpv)
		}
		if step == 0 {
			first = e
		}
		if meanOut == nil {
			meanOut, meanExact = make([]float64, len(exact)), make([]float64, len(exact))
		}
		for i := range exact {
			meanOut[i] += float64(outs[0][i]) / steps
			meanExact[i] += float64(exact[i]) / steps
		}
	}
	// With error feedback the residual of one step goes out with the next:
	// the mean over the steps is closer to the exact mean than one step is.
	var num, den float64
	for i := range meanOut {
		d := meanOut[i] - meanExact[i]
		num += d * d
		den += meanExact[i] * meanExact[i]
	}
	t.Logf("NMSE of the %d-step mean: %.3g", steps, num/den)
	if num/den >= first/2 {
		t.Errorf("error feedback: the %d-step mean has NMSE %.3g, one step %.3g", steps, num/den, first)
	}
}

// rankGrad returns rank r's rows×cols gradient-like tensor: heavy-tailed
// values whose scale varies by row and column (the tensor codec's domain;
// rankSmooth's smooth pictures are the video codecs').
func rankGrad(seed int64, r, rows, cols int) []float32 {
	rng := rand.New(rand.NewSource(seed*1000 + int64(r)))
	scale := rand.New(rand.NewSource(seed)) // the same row/column scales on every rank
	rs, cs := make([]float64, rows), make([]float64, cols)
	for i := range rs {
		rs[i] = math.Exp(scale.NormFloat64())
	}
	for j := range cs {
		cs[j] = math.Exp(scale.NormFloat64())
	}
	x := make([]float32, rows*cols)
	for i := range rows {
		for j := range cols {
			v := rng.ExpFloat64() * rs[i] * cs[j] * 1e-3
			if rng.Intn(2) == 0 {
				v = -v
			}
			x[i*cols+j] = float32(v)
		}
	}
	return x
}
