package gpt

import (
	"fmt"
	"math"
)

// AdamW is the optimizer: Adam with decoupled weight decay (Loshchilov &
// Hutter), the way torch.optim.AdamW applies it, on a model's flat
// parameters. Decay applies to the tensors whose Decay is set.
type AdamW struct {
	// Beta1, Beta2 and Eps are Adam's constants.
	Beta1, Beta2, Eps float64
	// WeightDecay is the decoupled decay coefficient (multiplied by the
	// learning rate).
	WeightDecay float64
	// FreezeVarianceAfter, when positive, stops updating the second moment
	// after that many steps, as 1-bit Adam does once its uncompressed
	// warm-up ends: the variance then no longer absorbs the noise of a
	// compressed gradient. 0 never freezes it.
	FreezeVarianceAfter int

	model *Model
	m, v  []float32
	step  int
}

// NewAdamW returns an AdamW for model with moments at zero.
func NewAdamW(model *Model, beta1, beta2, eps, weightDecay float64) (*AdamW, error) {
	switch {
	case !(beta1 >= 0 && beta1 < 1), !(beta2 >= 0 && beta2 < 1):
		return nil, fmt.Errorf("gpt: AdamW betas %v, %v: want each in [0, 1)", beta1, beta2)
	case !(eps > 0):
		return nil, fmt.Errorf("gpt: AdamW eps %v: want > 0", eps)
	case !(weightDecay >= 0) || math.IsInf(weightDecay, 0):
		return nil, fmt.Errorf("gpt: AdamW weight decay %v: want >= 0", weightDecay)
	}
	return &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay, model: model,
		m: make([]float32, len(model.Params)), v: make([]float32, len(model.Params))}, nil
}

// Steps returns how many updates have been applied.
func (a *AdamW) Steps() int { return a.step }

// Step applies one update with learning rate lr from the model's Grads,
// each multiplied by gradScale first (1, or the factor that clips the
// gradient's global norm).
func (a *AdamW) Step(lr, gradScale float64) {
	a.step++
	b1, b2 := float32(a.Beta1), float32(a.Beta2)
	bc1 := 1 - math.Pow(a.Beta1, float64(a.step))
	bc2 := 1 - math.Pow(a.Beta2, float64(a.step))
	stepSize := float32(lr / bc1)
	rbc2 := float32(1 / math.Sqrt(bc2))
	eps := float32(a.Eps)
	gs := float32(gradScale)
	frozen := a.FreezeVarianceAfter > 0 && a.step > a.FreezeVarianceAfter
	if frozen {
		// The frozen variance keeps the bias correction of its last update.
		rbc2 = float32(1 / math.Sqrt(1-math.Pow(a.Beta2, float64(a.FreezeVarianceAfter))))
	}
	off := 0
	for _, t := range a.model.tensors {
		p, g := t.Param, t.Grad
		m, v := a.m[off:off+len(p)], a.v[off:off+len(p)]
		off += len(p)
		decay := float32(1)
		if t.Decay {
			decay = float32(1 - lr*a.WeightDecay)
		}
		for i := range p {
			gi := g[i] * gs
			mi := b1*m[i] + (1-b1)*gi
			m[i] = mi
			vi := v[i]
			if !frozen {
				vi = b2*vi + (1-b2)*gi*gi
				v[i] = vi
			}
			p[i] = p[i]*decay - stepSize*mi/(float32(math.Sqrt(float64(vi)))*rbc2+eps)
		}
	}
}

// GradNorm returns the L2 norm of the model's gradient.
func GradNorm(m *Model) float64 {
	var s float64
	for _, g := range m.Grads {
		s += float64(g) * float64(g)
	}
	return math.Sqrt(s)
}

// Schedule is the learning rate as a function of the step: linear warm-up
// from 0 to Peak over Warmup steps, then a cosine decay to Peak·MinFrac at
// Total steps.
type Schedule struct {
	Peak    float64
	MinFrac float64
	Warmup  int
	Total   int
}

// At returns the learning rate of step (1-based).
func (s Schedule) At(step int) float64 {
	if step <= s.Warmup {
		return s.Peak * float64(step) / float64(max(s.Warmup, 1))
	}
	span := max(s.Total-s.Warmup, 1)
	frac := min(float64(step-s.Warmup)/float64(span), 1)
	min := s.Peak * s.MinFrac
	return min + 0.5*(s.Peak-min)*(1+math.Cos(math.Pi*frac))
}
