//go:build amd64 && !purego

package kern

//go:noescape
func addSumSqMaxAbsAVX2(r, x *float32, n int) (ss float32, maxAbs uint32)
