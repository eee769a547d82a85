//go:build amd64 && !purego

package kern

// The non-temporal kernels: as their namesakes, with VMOVNTPS stores (the
// float32 destinations 32-byte aligned) and an SFENCE before returning.

//go:noescape
func dequantResidualNTAVX2(recon, res *float32, q *byte, x *float32, n int, m float32)

//go:noescape
func dequantU8NTAVX2(dst *float32, q *byte, n int, m float32)

//go:noescape
func addTo2NTAVX2(dst, a, b *float32, n int)
