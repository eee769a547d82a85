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

// refToFP16 and refFromFP16 are the straightforward conversions the
// branch-free ones replaced; they check each other bit for bit.
func refToFP16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	abs := b & 0x7fffffff
	switch {
	case abs >= 0x477ff000:
		return sign | 0x7bff
	case abs >= 0x38800000:
		e := abs>>23 - 112
		m := abs & 0x7fffff
		h := e<<10 | m>>13
		rem := m & 0x1fff
		if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	case abs >= 0x33000000:
		e := abs >> 23
		m := abs&0x7fffff | 0x800000
		shift := 126 - e
		h := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	default:
		return sign
	}
}

func refFromFP16(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	e := uint32(h>>10) & 0x1f
	m := uint32(h & 0x3ff)
	switch {
	case e == 0:
		v := float32(m) * (1.0 / (1 << 24))
		return math.Float32frombits(math.Float32bits(v) | sign)
	case e == 31:
		return math.Float32frombits(sign | 0x7f800000 | m<<13)
	}
	return math.Float32frombits(sign | (e+112)<<23 | m<<13)
}

func TestFP16MatchesReference(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		if a, b := math.Float32bits(fromFP16(uint16(h))), math.Float32bits(refFromFP16(uint16(h))); a != b {
			t.Fatalf("fromFP16(%#04x) = %#08x, reference %#08x", h, a, b)
		}
	}
	// Every float32 whose low 13 bits are one of the rounding cases, over
	// every exponent and sign, plus random bit patterns.
	check := func(u uint32) {
		f := math.Float32frombits(u)
		if u&0x7f800000 == 0x7f800000 {
			return
		}
		if a, b := toFP16(f), refToFP16(f); a != b {
			t.Fatalf("toFP16(%v = %#08x) = %#04x, reference %#04x", f, u, a, b)
		}
	}
	for hi := uint32(0); hi < 1<<19; hi++ {
		for _, lo := range []uint32{0, 1, 0xfff, 0x1000, 0x1001, 0x1fff} {
			check(hi<<13 | lo)
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 1_000_000; i++ {
		check(rng.Uint32())
	}
}
