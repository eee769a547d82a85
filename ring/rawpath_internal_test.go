package ring

import (
	"math"
	"testing"
)

// TestRawHelpers: the branch-free NaN/Inf detection finds every non-finite
// value at every position of the unrolled loops and their tails, in both the
// in-place and the byte-by-byte (unaligned) add.
func TestRawHelpers(t *testing.T) {
	bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
	for n := 0; n <= 9; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i) - 3.5
		}
		if k := firstNonFinite(x); k != -1 {
			t.Fatalf("n %d: finite data reported at %d", n, k)
		}
		for pos := 0; pos < n; pos++ {
			for _, b := range bad {
				y := append([]float32(nil), x...)
				y[pos] = b
				if k := firstNonFinite(y); k != pos {
					t.Fatalf("n %d: %v at %d found at %d", n, b, pos, k)
				}
				for _, unaligned := range []bool{false, true} {
					dst := append([]float32(nil), x...)
					src := append([]float32(nil), x...)
					src[pos] = b
					w := wireOf(src)
					if unaligned {
						w = append([]byte{0}, w...)[1:]
					}
					if k := addWire(dst, w); k != pos {
						t.Fatalf("n %d unaligned %v: %v added at %d found at %d", n, unaligned, b, pos, k)
					}
					for i := range dst {
						if i != pos && dst[i] != 2*x[i] {
							t.Fatalf("n %d unaligned %v: dst[%d] = %v, want %v", n, unaligned, i, dst[i], 2*x[i])
						}
					}
				}
			}
		}
		// Overflow of a finite sum is caught too.
		if n > 0 {
			dst := make([]float32, n)
			src := make([]float32, n)
			dst[n-1], src[n-1] = math.MaxFloat32, math.MaxFloat32
			if k := addWire(dst, wireOf(src)); k != n-1 {
				t.Fatalf("n %d: overflow found at %d", n, k)
			}
		}
	}
	// A round trip through the wire form is exact.
	x := []float32{1.5, -0, float32(math.SmallestNonzeroFloat64), math.MaxFloat32}
	y := make([]float32, len(x))
	copyWire(y, wireOf(x))
	for i := range x {
		if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
			t.Fatalf("value %d: %v came back as %v", i, x[i], y[i])
		}
	}
}

// The raw path's per-value loops against a plain add:
//
//	go test ./ring -run '^$' -bench 'AddWire|PlainAdd|FirstNonFinite'
func BenchmarkAddWire(b *testing.B) {
	x := make([]float32, 1<<18)
	y := make([]float32, 1<<18)
	p := wireOf(y)
	b.SetBytes(4 << 18)
	for range b.N {
		addWire(x, p)
	}
}

func BenchmarkPlainAdd(b *testing.B) {
	x := make([]float32, 1<<18)
	y := make([]float32, 1<<18)
	b.SetBytes(4 << 18)
	for range b.N {
		for i := range x {
			x[i] += y[i]
		}
	}
}

func BenchmarkFirstNonFinite(b *testing.B) {
	x := make([]float32, 1<<18)
	b.SetBytes(4 << 18)
	for range b.N {
		firstNonFinite(x)
	}
}
