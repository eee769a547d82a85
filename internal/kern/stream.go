package kern

import "unsafe"

// StreamBytes is the output size from which the ...NT kernels' callers
// should prefer them: outputs this large do not stay in the last-level
// cache (32 MiB shared on the machines measured) next to their inputs, so
// writing them around the caches saves the read for ownership of every
// line and keeps the inputs cached.
const StreamBytes = 8 << 20

// Streaming reports whether an output of n float32 values is large enough
// for the ...NT kernels (see StreamBytes).
func Streaming(n int) bool { return 4*n >= StreamBytes }

// alignPeel returns how many float32 values precede the first 32-byte
// aligned one of p (p is 4-byte aligned), at most n.
func alignPeel(p *float32, n int) int {
	return min(int((32-uintptr(unsafe.Pointer(p))%32)%32/4), n)
}

// sameAlign reports whether a and b lie at the same offset modulo 32.
func sameAlign(a, b *float32) bool {
	return (uintptr(unsafe.Pointer(a))-uintptr(unsafe.Pointer(b)))%32 == 0
}

// DequantResidualNT is DequantResidual with non-temporal stores for recon
// and res where the CPU has them and the two are equally aligned; the
// results are the same.
func DequantResidualNT(recon, res []float32, q []byte, x []float32, m float32) {
	res, q, x = res[:len(recon)], q[:len(recon)], x[:len(recon)]
	if !useAVX2 || len(recon) < 64 || !sameAlign(&recon[0], &res[0]) {
		DequantResidual(recon, res, q, x, m)
		return
	}
	p := alignPeel(&recon[0], len(recon))
	DequantResidual(recon[:p], res[:p], q[:p], x[:p], m)
	n := (len(recon) - p) &^ 7
	dequantResidualNTAVX2(&recon[p], &res[p], &q[p], &x[p], n, m)
	p += n
	DequantResidual(recon[p:], res[p:], q[p:], x[p:], m)
}

// DequantU8NT is DequantU8 with non-temporal stores where the CPU has
// them; the results are the same.
func DequantU8NT(dst []float32, q []byte, m float32) {
	q = q[:len(dst)]
	if !useAVX2 || len(dst) < 64 {
		DequantU8(dst, q, m)
		return
	}
	p := alignPeel(&dst[0], len(dst))
	DequantU8(dst[:p], q[:p], m)
	n := (len(dst) - p) &^ 7
	dequantU8NTAVX2(&dst[p], &q[p], n, m)
	p += n
	DequantU8(dst[p:], q[p:], m)
}

// AddTo2NT is AddTo2 with non-temporal stores where the CPU has them; the
// results are the same.
func AddTo2NT(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	if !useAVX2 || len(dst) < 64 {
		AddTo2(dst, a, b)
		return
	}
	p := alignPeel(&dst[0], len(dst))
	AddTo2(dst[:p], a[:p], b[:p])
	n := (len(dst) - p) &^ 7
	addTo2NTAVX2(&dst[p], &a[p], &b[p], n)
	p += n
	AddTo2(dst[p:], a[p:], b[p:])
}
