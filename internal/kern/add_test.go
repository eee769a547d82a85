package kern

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// addFiniteRef is AddFinite written the plain way.
func addFiniteRef(dst, src []float32) bool {
	ok := true
	for i := range dst {
		dst[i] += src[i]
		v := float64(dst[i])
		if math.IsNaN(v) || math.IsInf(v, 0) {
			ok = false
		}
	}
	return ok
}

// TestAddFinite checks AddFinite, with and without the assembly, against
// the plain loop bit for bit, over lengths around the kernel's blocks of 8
// and 32, with one NaN, ±Inf or overflowing pair at every position.
func TestAddFinite(t *testing.T) {
	defer func(v bool) { useAVX2 = v }(useAVX2)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, asm := range []bool{false, true} {
		if asm && !useAVX2 {
			t.Log("no AVX2 on this machine: the Go loop only")
			continue
		}
		useAVX2 = asm
		for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 40, 63, 64, 65, 100, 1000} {
			for bad := -1; bad < n && bad < 70; bad++ {
				dst, src := values(rng, n, false), values(rng, n, false)
				if bad >= 0 {
					switch bad % 4 {
					case 0:
						src[bad] = float32(math.NaN())
					case 1:
						src[bad] = float32(math.Inf(1))
					case 2:
						dst[bad] = float32(math.Inf(-1))
					case 3: // finite inputs whose sum overflows
						dst[bad], src[bad] = 3e38, 3e38
					}
				}
				want := append([]float32(nil), dst...)
				wantOK := addFiniteRef(want, src)
				got := append([]float32(nil), dst...)
				gotOK := AddFinite(got, src)
				if gotOK != wantOK {
					t.Fatalf("asm %v n %d bad %d: AddFinite = %v, want %v", asm, n, bad, gotOK, wantOK)
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("asm %v n %d bad %d: value %d = %x, want %x", asm, n, bad, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
					}
				}
			}
		}
	}
}

func BenchmarkAddFinite(b *testing.B) {
	for _, n := range []int{2048, 1 << 18} {
		dst, src := make([]float32, n), make([]float32, n)
		for i := range src {
			src[i] = 1e-3
		}
		b.Run(fmt.Sprintf("%dvalues", n), func(b *testing.B) {
			b.SetBytes(int64(8 * n))
			for b.Loop() {
				if !AddFinite(dst, src) {
					b.Fatal("not finite")
				}
			}
		})
	}
}
