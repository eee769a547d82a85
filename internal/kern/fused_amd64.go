//go:build amd64 && !purego

package kern

//go:noescape
func addSumSqMaxAbsAVX2(r, x *float32, n int) (ss float32, maxAbs uint32)

//go:noescape
func dotLevels2AVX2(x0 *float32, q0 *byte, x1 *float32, q1 *byte, n int) (dot0 float32, qq0 int32, dot1 float32, qq1 int32)
