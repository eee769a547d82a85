package kern

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAddSumSqMaxAbsMatches checks AddSumSqMaxAbs against AddTo2 followed
// by SumSqMaxAbs bit for bit, over lengths around the blocks, unaligned
// starts and special values.
func TestAddSumSqMaxAbsMatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099} {
		for _, off := range []int{0, 1, 3} {
			x := values(rng, n+8, true)[off:][:n]
			a := values(rng, n+8, false)[off:][:n]
			got := append([]float32(nil), a...)
			ss, mx := AddSumSqMaxAbs(got, x)
			want := make([]float32, n)
			AddTo2(want, x, a)
			ss2, mx2 := SumSqMaxAbs(want)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n=%d off=%d: sum [%d] = %v, want %v", n, off, i, got[i], want[i])
				}
			}
			if math.Float32bits(ss) != math.Float32bits(ss2) || mx != mx2 {
				t.Fatalf("n=%d off=%d: %v %#x, AddTo2+SumSqMaxAbs %v %#x", n, off, ss, mx, ss2, mx2)
			}
		}
	}
}

// TestDotLevels2Matches checks DotLevels2 against DotLevels on each row,
// bit for bit.
func TestDotLevels2Matches(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 7, 8, 9, 17, 64, 1000, 2048, 4099} {
		x0, x1 := values(rng, n, false), values(rng, n, false)
		q0, q1 := make([]byte, n), make([]byte, n)
		for i := range q0 {
			q0[i], q1[i] = byte(rng.IntN(256)), byte(rng.IntN(256))
		}
		d0, s0, d1, s1 := DotLevels2(x0, q0, x1, q1)
		e0, t0 := DotLevels(x0, q0)
		e1, t1 := DotLevels(x1, q1)
		if math.Float32bits(d0) != math.Float32bits(e0) || s0 != t0 || math.Float32bits(d1) != math.Float32bits(e1) || s1 != t1 {
			t.Fatalf("n=%d: DotLevels2 = %v %d %v %d, DotLevels %v %d %v %d", n, d0, s0, d1, s1, e0, t0, e1, t1)
		}
	}
}
