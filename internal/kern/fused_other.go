//go:build !amd64 || purego

package kern

func addSumSqMaxAbsAVX2(r, x *float32, n int) (float32, uint32) { panic("unreachable") }
