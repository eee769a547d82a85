//go:build amd64 && !purego

package kern

// addFiniteAVX2 adds src to dst for n values (a positive multiple of 8)
// and reports whether every sum is finite.
//
//go:noescape
func addFiniteAVX2(dst, src *float32, n int) bool
