//go:build !amd64 || purego

package kern

func addSumSqMaxAbsAVX2(r, x *float32, n int) (float32, uint32) { panic("unreachable") }

func dotLevels2AVX2(x0 *float32, q0 *byte, x1 *float32, q1 *byte, n int) (float32, int32, float32, int32) {
	panic("unreachable")
}
