package ring

import (
	"hash/crc32"
	"math"
	"testing"

	"github.com/vccl/vccl/gradcodec"
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
		if k := gradcodec.FirstNonFinite(x); k != -1 {
			t.Fatalf("n %d: finite data reported at %d", n, k)
		}
		for pos := 0; pos < n; pos++ {
			for _, b := range bad {
				y := append([]float32(nil), x...)
				y[pos] = b
				if k := gradcodec.FirstNonFinite(y); k != pos {
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
					if k, _ := addWireSum(dst, w); k != pos {
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
			if k, _ := addWireSum(dst, wireOf(src)); k != n-1 {
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
		addWireSum(x, p)
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

// TestFusedSums: the block-wise add, check and divide compute the same
// values as the plain loops and the CRC-32C of the whole result, and name
// the first non-finite value in any block.
func TestFusedSums(t *testing.T) {
	n := 3*sumBlock + 5
	x := make([]float32, n)
	y := make([]float32, n)
	for i := range x {
		x[i] = float32(i%97) - 40.25
		y[i] = float32(i%13) * 0.375
	}
	for _, unaligned := range []bool{false, true} {
		dst := append([]float32(nil), x...)
		w := wireOf(y)
		if unaligned {
			w = append([]byte{0}, w...)[1:]
		}
		k, sum := addWireSum(dst, w)
		if k != -1 {
			t.Fatalf("unaligned %v: finite sums reported at %d", unaligned, k)
		}
		for i := range dst {
			if dst[i] != x[i]+y[i] {
				t.Fatalf("unaligned %v: dst[%d] = %v, want %v", unaligned, i, dst[i], x[i]+y[i])
			}
		}
		if want := crc32.Checksum(wireOf(dst), castagnoli); sum != want {
			t.Fatalf("unaligned %v: sum %08x, want %08x", unaligned, sum, want)
		}
		for _, pos := range []int{0, sumBlock - 1, sumBlock, 2*sumBlock + 7, n - 1} {
			d := append([]float32(nil), x...)
			s := append([]float32(nil), y...)
			s[pos] = float32(math.Inf(-1))
			w := wireOf(s)
			if unaligned {
				w = append([]byte{0}, w...)[1:]
			}
			if k, _ := addWireSum(d, w); k != pos {
				t.Fatalf("unaligned %v: -Inf added at %d found at %d", unaligned, pos, k)
			}
		}
	}
	k, sum := checkSum(x)
	if want := crc32.Checksum(wireOf(x), castagnoli); k != -1 || sum != want {
		t.Fatalf("checkSum = %d, %08x, want -1, %08x", k, sum, want)
	}
	for _, pos := range []int{0, sumBlock + 3, n - 1} {
		z := append([]float32(nil), x...)
		z[pos] = float32(math.NaN())
		if k, _ := checkSum(z); k != pos {
			t.Fatalf("checkSum: NaN at %d found at %d", pos, k)
		}
	}
	z := append([]float32(nil), x...)
	sum = divSum(z, 3)
	for i := range z {
		if z[i] != x[i]/3 {
			t.Fatalf("divSum: z[%d] = %v, want %v", i, z[i], x[i]/3)
		}
	}
	if want := crc32.Checksum(wireOf(z), castagnoli); sum != want {
		t.Fatalf("divSum = %08x, want %08x", sum, want)
	}
}
