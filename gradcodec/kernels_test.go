package gradcodec

import (
	"math"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// threadCPU returns the CPU time of the calling OS thread.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	const rusageThread = 1
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkKernels measures the simple codecs' loops alone (no header, no
// checksum) on 1M gradient-like values that stay in cache: per-core speed.
//
//	go test ./gradcodec -run '^$' -bench Kernels
func BenchmarkKernels(b *testing.B) {
	const rows, cols = 512, 2048
	// Gradient-like magnitudes: normal values times a log-normal row
	// scale around 1e-4, so fp16 meets normal and subnormal halves.
	rng := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, rows*cols)
	for r := 0; r < rows; r++ {
		unit := 1e-4 * math.Exp(2*rng.NormFloat64())
		for c := 0; c < cols; c++ {
			x[r*cols+c] = float32(unit * rng.NormFloat64())
		}
	}
	sh := Shape{Rows: rows, Cols: cols}
	buf := make([]byte, 4*len(x)+1)
	y := make([]float32, len(x))
	sc := make([]uint16, ScaleGroups(sh))
	fsc := make([]float32, len(sc))
	run := func(name string, f func()) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU()
			for i := 0; i < b.N; i++ {
				f()
			}
			cpu := threadCPU() - cpu0
			b.ReportMetric(float64(len(x))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mvalues/s")
			// Per core: values over the CPU time of this thread, the
			// steady figure on a shared machine.
			b.ReportMetric(float64(len(x))*float64(b.N)/cpu.Seconds()/1e6, "cpu-Mvalues/s")
		})
	}
	// Odd offset: payloads follow a header and need not be aligned.
	p := buf[1:]
	run("raw/encode", func() { putRaw(p, x) })
	run("raw/decode", func() { getRaw(y, p) })
	run("fp16/encode", func() { putFP16(p, x) })
	run("fp16/decode", func() { getFP16(y, p) })
	run("bf16/encode", func() { putBF16(p, x) })
	run("bf16/decode", func() { getBF16(y, p) })
	run("int8/encode", func() { putInt8(p, sc, nil, x, sh) })
	for i, h := range sc {
		fsc[i] = FromBF16(h)
	}
	run("int8/decode", func() { getInt8(y, p, fsc, sh) })
}
