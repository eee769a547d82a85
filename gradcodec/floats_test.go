package gradcodec

import (
	"math"
	"testing"
)

func TestFloat32sRoundTrip(t *testing.T) {
	src := []float32{0, -0, 1.5, -3e38, float32(math.Inf(1)), float32(math.NaN()), 1e-45}
	b := AppendFloat32s([]byte{9}, src)
	if len(b) != 1+4*len(src) || b[0] != 9 {
		t.Fatalf("appended %d bytes", len(b))
	}
	dst := make([]float32, len(src))
	Float32sFromBytes(dst, b[1:])
	for i := range src {
		if math.Float32bits(dst[i]) != math.Float32bits(src[i]) {
			t.Fatalf("value %d: %v, want %v", i, dst[i], src[i])
		}
	}
	if i := FirstNonFinite(src); i != 4 {
		t.Fatalf("FirstNonFinite = %d, want 4", i)
	}
	if i := FirstNonFinite(src[:4]); i != -1 {
		t.Fatalf("FirstNonFinite of finite values = %d", i)
	}
}

func TestNearSquare(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 255, 256, 257, 289, 1000, 4096, 100003} {
		s, tail := NearSquare(n)
		if s.Len()+tail != n || tail < 0 || (s.Cols > 0 && tail >= s.Cols) {
			t.Fatalf("n %d: %dx%d + %d", n, s.Rows, s.Cols, tail)
		}
		if s.Cols > 0 && (s.Cols%16 != 0 || float64(s.Cols) < math.Sqrt(float64(n)) || float64(s.Cols-16) >= math.Sqrt(float64(n))) {
			t.Fatalf("n %d: cols %d is not the multiple of 16 at or above sqrt(n)", n, s.Cols)
		}
		if got := ShapeFor(n); got.Len() != n {
			t.Fatalf("ShapeFor(%d) = %v", n, got)
		}
	}
}
