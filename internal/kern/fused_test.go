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
