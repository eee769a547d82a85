package gradcodec

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestFP16(t *testing.T) {
	// Every finite half survives half→float→half.
	for h := 0; h < 1<<16; h++ {
		if h&0x7c00 == 0x7c00 {
			continue
		}
		if got := toFP16(fromFP16(uint16(h))); got != uint16(h) {
			t.Fatalf("half %#04x → %v → %#04x", h, fromFP16(uint16(h)), got)
		}
	}
	// Rounding to nearest: the result is never farther than the neighbours.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		f := float32(rng.NormFloat64() * math.Pow(10, rng.Float64()*12-8))
		h := toFP16(f)
		got := float64(fromFP16(h))
		for _, nb := range []uint16{h - 1, h + 1} {
			if nb&0x7c00 == 0x7c00 || (h&0x7fff == 0 && nb == h-1) {
				continue
			}
			if d := math.Abs(float64(fromFP16(nb)) - float64(f)); d < math.Abs(got-float64(f)) {
				t.Fatalf("toFP16(%v) = %v but neighbour %v is closer", f, got, fromFP16(nb))
			}
		}
	}
	if got := fromFP16(toFP16(1e6)); got != 65504 {
		t.Errorf("1e6 saturates to %v, want 65504", got)
	}
}
