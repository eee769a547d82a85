package gradcodec_test

import (
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/codectest"
	"github.com/vccl/vccl/internal/metric"
)

var (
	benchTensor    = sync.OnceValue(func() []float32 { return codectest.GradientLike(42, 2048, 2048) })
	benchMLPTensor = sync.OnceValue(func() []float32 { return codectest.GradientLike(43, 256, 784) })
)

// BenchmarkEncode measures encode throughput per codec on a 4M-value
// gradient-like tensor (2048×2048) at 1.4 bits/value, after a first
// (rate-searching) frame. Mvalues/s is wall time; cpu-Mvalues/s divides by
// the process's CPU time, the steadier figure on a shared machine. Video encodes
// include the local decode of the scale refit.
//
//	go test ./gradcodec -run '^$' -bench . -benchtime 5x
func BenchmarkEncode(b *testing.B) {
	for _, codec := range gradcodec.Codecs() {
		b.Run(codec, func(b *testing.B) { benchCodec(b, codec, false) })
	}
}

// BenchmarkDecode measures decode throughput per codec on the same tensor.
func BenchmarkDecode(b *testing.B) {
	for _, codec := range gradcodec.Codecs() {
		b.Run(codec, func(b *testing.B) { benchCodec(b, codec, true) })
	}
}

// BenchmarkEncodeMLP and BenchmarkDecodeMLP do the same on the 256×784
// first-layer gradient shape of the MNIST MLP, where per-call costs show.
func BenchmarkEncodeMLP(b *testing.B) {
	for _, codec := range []string{"int8", "tensor", "h264", "hevc"} {
		b.Run(codec, func(b *testing.B) {
			benchCodecOn(b, codec, false, benchMLPTensor(), gradcodec.Shape{Rows: 256, Cols: 784})
		})
	}
}

// BenchmarkDecodeMLP: see BenchmarkEncodeMLP.
func BenchmarkDecodeMLP(b *testing.B) {
	for _, codec := range []string{"int8", "tensor", "h264", "hevc"} {
		b.Run(codec, func(b *testing.B) {
			benchCodecOn(b, codec, true, benchMLPTensor(), gradcodec.Shape{Rows: 256, Cols: 784})
		})
	}
}

func benchCodec(b *testing.B, codec string, decode bool) {
	benchCodecOn(b, codec, decode, benchTensor(), gradcodec.Shape{Rows: 2048, Cols: 2048})
}

func benchCodecOn(b *testing.B, codec string, decode bool, x []float32, sh gradcodec.Shape) {
	enc, dec := codectest.MustEncoder(b, codec, 1.4), codectest.MustDecoder(b)
	fr, err := enc.Encode(nil, x, sh) // first frame: rate search, contexts
	if err != nil {
		b.Fatal(err)
	}
	if fr, err = enc.Encode(fr[:0], x, sh); err != nil { // a steady-state frame
		b.Fatal(err)
	}
	y := make([]float32, len(x))
	if err := dec.Decode(y, fr); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(4 * len(x)))
	b.ReportAllocs()
	runtime.LockOSThread() // the codecs run on this thread: measure its CPU time too
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if decode {
			err = dec.Decode(y, fr)
		} else {
			fr, err = enc.Encode(fr[:0], x, sh)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := threadCPU() - cpu0
	if !decode {
		if err := dec.Decode(y, fr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(8*float64(len(fr))/float64(len(x)), "bits/value")
	b.ReportMetric(metric.NMSE32(y, x), "NMSE")
	b.ReportMetric(float64(len(x))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mvalues/s")
	b.ReportMetric(float64(len(x))*float64(b.N)/cpu.Seconds()/1e6, "cpu-Mvalues/s")
}

// threadCPU returns the CPU time used so far by the process (the codecs run
// on the calling thread, x265 also on threads of its own).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	const rusageSelf = 0 // RUSAGE_SELF: all threads (x265 encodes on its own threads)
	if err := syscall.Getrusage(rusageSelf, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
