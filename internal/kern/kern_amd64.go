//go:build amd64 && !purego

package kern

import "golang.org/x/sys/cpu"

// useAVX2: the AVX2 kernels run here: AVX2, FMA and F16C (the fp16
// kernels). Real CPUs with AVX2 have F16C, but a virtual machine may hide
// it, so it is checked too.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && hasF16C()

// hasF16C reports whether the CPU has the F16C conversions.
//
//go:noescape
func hasF16C() bool

//go:noescape
func sumSqMaxAbsAVX2(x *float32, n int) (ss float32, maxAbs uint32)

//go:noescape
func quantU8AVX2(out *byte, x *float32, n int, inv float32)

//go:noescape
func dotLevelsAVX2(x *float32, q *byte, n int) (dot float32, qq int32)

//go:noescape
func dequantU8AVX2(dst *float32, q *byte, n int, m float32)

//go:noescape
func dequantResidualAVX2(recon, res *float32, q *byte, x *float32, n int, m float32)

//go:noescape
func residualU8AVX2(res *float32, q *byte, x *float32, n int, m float32)

//go:noescape
func addToAVX2(x, r *float32, n int)

//go:noescape
func addTo2AVX2(dst, a, b *float32, n int)

//go:noescape
func subToAVX2(dst, a, b *float32, n int)

//go:noescape
func allFiniteAVX2(x *float32, n int) bool

//go:noescape
func encodeFP16AVX2(out *uint16, x *float32, n int) bool

//go:noescape
func decodeFP16AVX2(dst *float32, h *uint16, n int) bool

//go:noescape
func encodeBF16AVX2(out *uint16, x *float32, n int) bool

//go:noescape
func decodeBF16AVX2(dst *float32, h *uint16, n int) bool

//go:noescape
func quantI8AVX2(out *byte, x *float32, n int, inv float32)

//go:noescape
func dequantI8AVX2(dst *float32, q *byte, n int, m float32)

//go:noescape
func quantDZAVX2(out *byte, x *float32, n int, inv, theta float32) (maxAbs uint32)

//go:noescape
func dequantU8NTAVX2(dst *float32, q *byte, n int, m float32)

func storeFence()
