package gradcodec

import (
	"runtime"
	"testing"
)

// tensorRoundTrip encodes src with e and decodes it, returning the
// decoded values and the frame-equivalent bits per value.
func tensorRoundTrip(t testing.TB, e *tensorEncoder, src []float32, s Shape) ([]float32, float64) {
	t.Helper()
	p, err := e.appendPayload(nil, src, s)
	if err != nil {
		t.Fatal(err)
	}
	var d tensorDecoder
	out := make([]float32, len(src))
	if err := d.decodePayload(out, s, p); err != nil {
		t.Fatal(err)
	}
	return out, 8 * float64(len(p)+HeaderSize+TrailerSize) / float64(len(src))
}

func TestTensorPayloadRoundTrip(t *testing.T) {
	for _, sh := range []Shape{{256, 784}, {128, 256}, {10, 128}, {1, 5000}, {3000, 1}, {64, 64}} {
		for _, bpv := range []float64{0.5, 1.4, 3} {
			x := gradientLike(1, sh.Rows, sh.Cols)
			e := newTensorEncoder(bpv)
			y, got := tensorRoundTrip(t, e, x, sh)
			y2, got2 := tensorRoundTrip(t, e, x, sh)
			t.Logf("%dx%d target %.1f: %.3f / %.4f, second %.3f / %.4f", sh.Rows, sh.Cols, bpv, got, nmse(x, y), got2, nmse(x, y2))
		}
	}
}

// BenchmarkTensorPayload measures the tensor codec's payload encode and
// decode on the 2048×2048 gradient-like tensor at 1.4 bits/value.
func BenchmarkTensorPayload(b *testing.B) {
	x, sh := benchTensor(), Shape{Rows: 2048, Cols: 2048}
	for _, decode := range []bool{false, true} {
		name := "encode"
		if decode {
			name = "decode"
		}
		b.Run(name, func(b *testing.B) {
			e := newTensorEncoder(1.4)
			var d tensorDecoder
			p, err := e.appendPayload(nil, x, sh)
			if err != nil {
				b.Fatal(err)
			}
			p, _ = e.appendPayload(p[:0], x, sh)
			y := make([]float32, len(x))
			b.SetBytes(int64(4 * len(x)))
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU()
			b.ResetTimer()
			for range b.N {
				if decode {
					err = d.decodePayload(y, sh, p)
				} else {
					p, err = e.appendPayload(p[:0], x, sh)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := threadCPU() - cpu0
			if err := d.decodePayload(y, sh, p); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(8*float64(len(p)+HeaderSize+TrailerSize)/float64(len(x)), "bits/value")
			b.ReportMetric(nmse(x, y), "NMSE")
			b.ReportMetric(float64(len(x))*float64(b.N)/cpu.Seconds()/1e6, "cpu-Mvalues/s")
		})
	}
}
