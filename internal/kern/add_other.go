//go:build !amd64 || purego

package kern

func addFiniteAVX2(dst, src *float32, n int) bool { panic("unreachable") }
