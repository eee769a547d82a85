package ring_test

import (
	"context"
	"errors"
	"testing"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// BenchmarkAllReduce16MiB runs one allreduce of 16 MiB (4 Mi float32, one
// 2048×2048 tensor) on 4 in-process ranks over in-memory links, per codec.
// It reports bits/value on the wire (rank 0), the NMSE of the result against
// the exact mean, and rank 0's encode and decode time per op. Error feedback
// is off, so the NMSE is that of one allreduce.
//
//	go test ./ring -run '^$' -bench AllReduce16MiB -benchtime 3x
func BenchmarkAllReduce16MiB(b *testing.B) {
	const size, rows, cols = 4, 2048, 2048
	layout := []gradcodec.Shape{{Rows: rows, Cols: cols}}
	inputs := make([][]float32, size)
	for r := range inputs {
		inputs[r] = smooth(uint64(r), rows, cols)
	}
	ref := reference(inputs, true)
	for _, name := range []string{"ringtest-raw", "raw", "h264", "hevc"} {
		b.Run(name, func(b *testing.B) {
			codecs := make([]ring.Codec, size)
			for r := range codecs {
				if name == "ringtest-raw" {
					codecs[r] = &ringtest.RawCodec{}
				} else {
					codecs[r] = newGradCodec(b, name, false)
				}
			}
			net := ringtest.NewNetwork(size)
			work := make([][]float32, size)
			for r := range work {
				work[r] = make([]float32, rows*cols)
			}
			var st ring.Stats
			b.SetBytes(4 * rows * cols)
			b.ReportAllocs()
			// Iteration -1 is a warm-up, outside the timing: it opens the
			// encoders and lets rate control settle.
			for i := -1; i < b.N; i++ {
				b.StopTimer()
				for r := range work {
					copy(work[r], inputs[r])
				}
				if i == 0 {
					b.ResetTimer()
				}
				b.StartTimer()
				errs := runRanks(b, size, func(ctx context.Context, r int) error {
					s, err := net.Ring(r).AllReduce(ctx, work[r], ring.Options{
						Op: uint64(i + 2), Average: true, Layout: layout, Codec: codecs[r], Stream: "bench"})
					if r == 0 {
						st = s
					}
					return err
				})
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(st.BitsPerValue(), "bits/value")
			b.ReportMetric(metric.NMSE(work[0], ref), "nmse")
			b.ReportMetric(float64(st.EncodeTime.Milliseconds()), "enc-ms/op")
			b.ReportMetric(float64(st.DecodeTime.Milliseconds()), "dec-ms/op")
		})
	}
}
