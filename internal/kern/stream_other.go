//go:build !amd64 || purego

package kern

func dequantResidualNTAVX2(recon, res *float32, q *byte, x *float32, n int, m float32) {
	panic("unreachable")
}
func dequantU8NTAVX2(dst *float32, q *byte, n int, m float32) { panic("unreachable") }
func addTo2NTAVX2(dst, a, b *float32, n int)                  { panic("unreachable") }
