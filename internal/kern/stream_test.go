package kern

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestStreamKernelsMatch checks the non-temporal kernels against their
// namesakes bit for bit, over lengths and alignments around the blocks
// and the peeling (including destinations aligned differently).
func TestStreamKernelsMatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 63, 64, 65, 100, 1000, 4099} {
		for _, off := range []int{0, 1, 3, 7} {
			for _, off2 := range []int{0, 5} {
				x := values(rng, n+8, true)[off:][:n]
				a := values(rng, n+8, false)[off2:][:n]
				q := make([]byte, n)
				for i := range q {
					q[i] = byte(rng.IntN(256))
				}
				m := float32(rng.Float64())
				r1, s1 := make([]float32, n+8)[off:][:n], make([]float32, n+8)[off2:][:n]
				r2, s2 := make([]float32, n), make([]float32, n)
				DequantResidualNT(r1, s1, q, x, m)
				DequantResidual(r2, s2, q, x, m)
				same(t, "DequantResidualNT recon", n, off, r1, r2)
				same(t, "DequantResidualNT res", n, off, s1, s2)
				DequantU8NT(r1, q, m)
				DequantU8(r2, q, m)
				same(t, "DequantU8NT", n, off, r1, r2)
				AddTo2NT(r1, x, a)
				AddTo2(r2, x, a)
				same(t, "AddTo2NT", n, off, r1, r2)
			}
		}
	}
}

func same(t *testing.T, name string, n, off int, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s n=%d off=%d: [%d] = %v, want %v", name, n, off, i, got[i], want[i])
		}
	}
}

func BenchmarkStream(b *testing.B) {
	const n = 4 << 20
	x, r, out, res := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	q := make([]byte, n)
	for _, nt := range []bool{false, true} {
		name := "plain"
		if nt {
			name = "nt"
		}
		b.Run("DequantResidual/"+name, func(b *testing.B) {
			b.SetBytes(4 * n)
			for i := 0; i < b.N; i++ {
				if nt {
					DequantResidualNT(out, res, q, x, 0.5)
				} else {
					DequantResidual(out, res, q, x, 0.5)
				}
			}
		})
		b.Run("AddTo2/"+name, func(b *testing.B) {
			b.SetBytes(4 * n)
			for i := 0; i < b.N; i++ {
				if nt {
					AddTo2NT(out, x, r)
				} else {
					AddTo2(out, x, r)
				}
			}
		})
	}
}
