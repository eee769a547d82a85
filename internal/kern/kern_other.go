//go:build !amd64 || purego

package kern

// useAVX2 is false here: the pure-Go loops run.
var useAVX2 = false

func sumSqMaxAbsAVX2(x *float32, n int) (float32, uint32)       { panic("unreachable") }
func quantU8AVX2(out *byte, x *float32, n int, inv float32)     { panic("unreachable") }
func dotLevelsAVX2(x *float32, q *byte, n int) (float32, int32) { panic("unreachable") }
func dequantU8AVX2(dst *float32, q *byte, n int, m float32)     { panic("unreachable") }
func dequantResidualAVX2(recon, res *float32, q *byte, x *float32, n int, m float32) {
	panic("unreachable")
}
func residualU8AVX2(res *float32, q *byte, x *float32, n int, m float32) {
	panic("unreachable")
}
func addToAVX2(x, r *float32, n int)                        { panic("unreachable") }
func addTo2AVX2(dst, a, b *float32, n int)                  { panic("unreachable") }
func subToAVX2(dst, a, b *float32, n int)                   { panic("unreachable") }
func allFiniteAVX2(x *float32, n int) bool                  { panic("unreachable") }
func encodeFP16AVX2(out *uint16, x *float32, n int) bool    { panic("unreachable") }
func decodeFP16AVX2(dst *float32, h *uint16, n int) bool    { panic("unreachable") }
func encodeBF16AVX2(out *uint16, x *float32, n int) bool    { panic("unreachable") }
func decodeBF16AVX2(dst *float32, h *uint16, n int) bool    { panic("unreachable") }
func quantI8AVX2(out *byte, x *float32, n int, inv float32) { panic("unreachable") }
func dequantI8AVX2(dst *float32, q *byte, n int, m float32) { panic("unreachable") }

func quantDZAVX2(out *byte, x *float32, n int, inv, theta float32) uint32 { panic("unreachable") }

func dequantU8NTAVX2(dst *float32, q *byte, n int, m float32) { panic("unreachable") }

func storeFence() {}
