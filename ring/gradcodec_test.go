package ring_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/codectest"
	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

func newGradCodec(t testing.TB, codec string, ef bool) *ring.GradCodec {
	t.Helper()
	if !gradcodec.Registered(codec) {
		t.Skipf("codec %s is not registered in this build (the video plug-in needs cgo)", codec)
	}
	c, err := ring.NewGradCodec(gradcodec.Options{Codec: codec, Backend: "software", BitsPerValue: 1.4}, ef)
	if err != nil {
		t.Fatalf("NewGradCodec(%s): %v", codec, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	return c
}

// smooth returns gradient-like test data: a smooth 2-D field plus noise.
func smooth(seed uint64, rows, cols int) []float32 {
	x := randData(seed, rows*cols)
	for i := range x {
		r, c := i/cols, i%cols
		x[i] = 0.3*x[i] + float32(math.Sin(float64(r)/9+float64(seed))*math.Cos(float64(c)/13))
	}
	return x
}

func TestGradCodecRoundTrip(t *testing.T) {
	for _, name := range []string{"raw", "int8", "h264", "hevc"} {
		t.Run(name, func(t *testing.T) {
			enc := newGradCodec(t, name, false)
			dec := newGradCodec(t, name, false)
			// A full matrix, a 1-D tensor, a partial row, a small bias, a thin
			// matrix, a tiny bias.
			pieces := []gradcodec.Shape{{Rows: 96, Cols: 128}, {Rows: 1, Cols: 5003}, {Rows: 1, Cols: 100}, {Rows: 700, Cols: 7}, {Rows: 1, Cols: 40}}
			n := 0
			for _, p := range pieces {
				n += p.Len()
			}
			src := smooth(1, 1, n)
			recon := make([]float32, n)
			wire, err := enc.Encode("s", src, pieces, recon)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, n)
			if err := dec.Decode(got, wire); err != nil {
				t.Fatal(err)
			}
			if hash(got) != hash(recon) {
				t.Fatal("Decode differs from Encode's recon")
			}
			ref := make([]float64, n)
			for i, v := range src {
				ref[i] = float64(v)
			}
			e := metric.NMSE(got, ref)
			bpv := 8 * float64(len(wire)) / float64(n)
			t.Logf("%s: %d values, %d bytes, %.2f bits/value, NMSE %.3g", name, n, len(wire), bpv, e)
			if name == "raw" && e != 0 {
				t.Fatalf("raw NMSE %g", e)
			}
			if e > 0.2 {
				t.Fatalf("NMSE %g > 0.2", e)
			}
			// The 100-value piece is below RawBelow: sent exactly by the
			// fixed-rate codecs, as an int8 frame by the video codecs.
			off := 96*128 + 5003
			small := make([]float64, 100)
			for i := range small {
				small[i] = float64(src[off+i])
			}
			switch e := metric.NMSE(got[off:off+100], small); {
			case (name == "raw" || name == "int8") && e != 0:
				t.Fatalf("raw piece: NMSE %g, want exact", e)
			case e > 1e-3:
				t.Fatalf("small piece as int8: NMSE %g, want < 1e-3", e)
			}
			// The 40-value piece is under minInt8Piece: raw for every codec.
			for i := n - 40; i < n; i++ {
				if got[i] != src[i] {
					t.Fatalf("raw piece value %d = %v, want %v", i, got[i], src[i])
				}
			}
			// Corruption anywhere is caught.
			bad := append([]byte(nil), wire...)
			bad[len(bad)/3] ^= 1
			if err := dec.Decode(got, bad); !errors.Is(err, gradcodec.ErrBadFrame) {
				t.Fatalf("corrupted: %v", err)
			}
			if err := dec.Decode(got[:n-1], wire); !errors.Is(err, gradcodec.ErrShapeMismatch) {
				t.Fatalf("short dst: %v", err)
			}
			src[7] = float32(math.NaN())
			if _, err := enc.Encode("s", src, pieces, recon); !errors.Is(err, gradcodec.ErrNonFinite) {
				t.Fatalf("NaN: %v", err)
			}
		})
	}
}

// TestAllReduceVideo runs the compressed ring with real FFmpeg codecs.
func TestAllReduceVideo(t *testing.T) {
	const size, rows, cols = 4, 128, 160
	for _, name := range []string{"h264", "hevc"} {
		t.Run(name, func(t *testing.T) {
			net := ringtest.NewNetwork(size)
			codecs := make([]*ring.GradCodec, size)
			for r := range codecs {
				codecs[r] = newGradCodec(t, name, true)
			}
			in := make([][]float32, size)
			for r := range in {
				in[r] = smooth(uint64(r), rows, cols)
			}
			ref := reference(in, true)
			var st ring.Stats
			errs := runRanks(t, size, func(ctx context.Context, rank int) error {
				s, err := net.Ring(rank).AllReduce(ctx, in[rank], ring.Options{Op: 1, Average: true,
					Layout: []gradcodec.Shape{{Rows: rows, Cols: cols}}, Codec: codecs[rank], Stream: "b0"})
				if rank == 0 {
					st = s
				}
				return err
			})
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			checkIdentical(t, in)
			e := metric.NMSE(in[0], ref)
			t.Logf("%s: NMSE %.3g, %.2f bits/value on the wire, encode %v decode %v", name, e, st.BitsPerValue(), st.EncodeTime, st.DecodeTime)
			// Four lossy encodes of each value at ~1.4 bits/value, on data
			// whose noise part (a quarter of its energy) cannot compress.
			const maxNMSE = 0.35
			if e > maxNMSE {
				t.Fatalf("NMSE %g > %g", e, maxNMSE)
			}
			if st.BitsPerValue() > 8 {
				t.Fatalf("%.2f bits/value: not compressed", st.BitsPerValue())
			}
		})
	}
}

// TestAllReduceErrorFeedback: with error feedback, the mean of repeated
// allreduces of the same gradients converges on the exact mean (the codec's
// bias is carried forward), far below one step's error.
func TestAllReduceErrorFeedback(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 8 video allreduces")
	}
	const size, rows, cols, steps = 2, 64, 96, 8
	net := ringtest.NewNetwork(size)
	codecs := []*ring.GradCodec{newGradCodec(t, "h264", true), newGradCodec(t, "h264", true)}
	for _, c := range codecs {
		c.RawBelow = 16
	}
	grads := [][]float32{smooth(1, rows, cols), smooth(2, rows, cols)}
	ref := reference(grads, false)
	mean := make([]float64, rows*cols)
	var first float64
	for s := 0; s < steps; s++ {
		in := [][]float32{append([]float32(nil), grads[0]...), append([]float32(nil), grads[1]...)}
		errs := runRanks(t, size, func(ctx context.Context, rank int) error {
			_, err := net.Ring(rank).AllReduce(ctx, in[rank], ring.Options{Op: uint64(s + 1),
				Layout: []gradcodec.Shape{{Rows: rows, Cols: cols}}, Codec: codecs[rank], Stream: "w"})
			return err
		})
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if s == 0 {
			first = metric.NMSE(in[0], ref)
		}
		for i, v := range in[0] {
			mean[i] += float64(v) / steps
		}
	}
	m := make([]float32, len(mean))
	for i, v := range mean {
		m[i] = float32(v)
	}
	avg := metric.NMSE(m, ref)
	t.Logf("one step NMSE %.3g, mean of %d steps NMSE %.3g", first, steps, avg)
	if !(avg < first/3) {
		t.Fatalf("error feedback did not cut the bias: %.3g vs %.3g", avg, first)
	}
}

// TestGradCodecEncoderCap: the sub-chunks of a stream share an encoder, at
// most MaxEncoders stay open (least recently used closed), and every frame
// still decodes to exactly the recon its encoder reported.
func TestGradCodecEncoderCap(t *testing.T) {
	for _, name := range []string{"int8", "h264"} {
		t.Run(name, func(t *testing.T) {
			enc := newGradCodec(t, name, true)
			dec := newGradCodec(t, name, false)
			enc.MaxEncoders = 3
			for step := 0; step < 3; step++ {
				for k := 0; k < 6; k++ {
					sh := gradcodec.Shape{Rows: 32 + 16*k, Cols: 128}
					src := smooth(uint64(10*step+k), sh.Rows, sh.Cols)
					recon := make([]float32, len(src))
					// Two sub-chunks of one stream share one encoder.
					for sub := 0; sub < 2; sub++ {
						stream := fmt.Sprintf("b%d/rs/c0.s%d@%d+%d", k, sub, sub*len(src), len(src))
						wire, err := enc.Encode(stream, src, []gradcodec.Shape{sh}, recon)
						if err != nil {
							t.Fatal(err)
						}
						codectest.DecodesToRecon(t, dec, wire, recon, fmt.Sprintf("%s %v", stream, sh))
					}
					if n := enc.OpenEncoders(); n > 3 {
						t.Fatalf("%d encoders open, cap 3", n)
					}
				}
			}
			if n := enc.OpenEncoders(); n != 3 {
				t.Errorf("%d encoders open after 6 streams, want the cap 3", n)
			}
			enc.MaxEncoders = 100
			for sub := 0; sub < 5; sub++ {
				sh := gradcodec.Shape{Rows: 32, Cols: 128}
				src := smooth(7, sh.Rows, sh.Cols)
				if _, err := enc.Encode(fmt.Sprintf("z/rs/c1.s%d@%d+%d", sub, sub*len(src), len(src)), src, []gradcodec.Shape{sh}, make([]float32, len(src))); err != nil {
					t.Fatal(err)
				}
			}
			if n := enc.OpenEncoders(); n != 4 {
				t.Errorf("5 sub-chunks of one new stream: %d encoders open, want 3+1", n)
			}
		})
	}
}

// TestGradCodecSubChunkResiduals: sub-chunks that share an encoder (and
// its rate control) keep their own residuals, through encoder eviction,
// and each residual is exactly the frame's input (src plus the previous
// residual) minus what a decoder of the frame yields. Raw pieces leave a
// zero residual; small int8 pieces of a video stream a residual like
// any frame's.
func TestGradCodecSubChunkResiduals(t *testing.T) {
	for _, name := range []string{"int8", "h264"} {
		t.Run(name, func(t *testing.T) {
			enc := newGradCodec(t, name, true)
			dec := newGradCodec(t, name, false)
			enc.MaxEncoders = 1 // every switch of family evicts
			// A compressed piece and a small one (under RawBelow: raw with
			// int8, an int8 frame with h264) per sub-chunk.
			pieces := []gradcodec.Shape{{Rows: 48, Cols: 128}, {Rows: 1, Cols: 300}}
			n := pieces[0].Len() + pieces[1].Len()
			prev := map[string][]float32{}
			for step := 0; step < 4; step++ {
				for _, fam := range []string{"a/rs/c1", "b/ag/c0"} {
					for sub := 0; sub < 2; sub++ {
						stream := fmt.Sprintf("%s.s%d@%d+%d", fam, sub, sub*n, n)
						// Sub-chunks of very different magnitudes: a residual
						// or scale carried across them would show.
						src := smooth(uint64(100*step+10*sub+len(fam)), 1, n)
						for i := range src {
							src[i] *= float32(1 + 99*sub)
						}
						x := make([]float32, n)
						for i := range x {
							x[i] = src[i]
							if r := prev[stream]; r != nil {
								x[i] += r[i]
							}
						}
						recon := make([]float32, n)
						wire, err := enc.Encode(stream, src, pieces, recon)
						if err != nil {
							t.Fatal(err)
						}
						y := codectest.DecodesToRecon(t, dec, wire, recon, stream)
						res := enc.ErrorFeedback().Residual(stream)
						if len(res) != n {
							t.Fatalf("%s: residual of %d values, want %d", stream, len(res), n)
						}
						for i := range x {
							if want := x[i] - y[i]; math.Float32bits(res[i]) != math.Float32bits(want) {
								t.Fatalf("step %d %s value %d: residual %v, want input %v - decoded %v = %v", step, stream, i, res[i], x[i], y[i], want)
							}
						}
						for i := pieces[0].Len(); i < n && name == "int8"; i++ {
							if res[i] != 0 { // a small piece of a fixed-rate codec goes raw
								t.Fatalf("%s: raw value %d has residual %v", stream, i, res[i])
							}
						}
						prev[stream] = append([]float32(nil), res...)
					}
				}
			}
			if k := enc.OpenEncoders(); k != 1 {
				t.Errorf("%d encoders open, cap 1", k)
			}
		})
	}
}

// TestGradCodecSmallPieces: a piece under RawBelow that a chunk boundary
// cut off a large tensor costs a video stream about 8 bits per value (an
// int8 frame), not 32, and decodes close to its input; under a fixed-rate
// codec it still goes raw.
func TestGradCodecSmallPieces(t *testing.T) {
	big := gradcodec.Shape{Rows: 64, Cols: 128}
	frag := gradcodec.Shape{Rows: 4, Cols: 256} // 1024 values
	for _, name := range []string{"h264", "fp16"} {
		t.Run(name, func(t *testing.T) {
			enc := newGradCodec(t, name, true)
			dec := newGradCodec(t, name, false)
			src := smooth(5, 1, big.Len()+frag.Len())
			alone, err := enc.Encode("a", src[:big.Len()], []gradcodec.Shape{big}, make([]float32, big.Len()))
			if err != nil {
				t.Fatal(err)
			}
			recon := make([]float32, len(src))
			wire, err := enc.Encode("b", src, []gradcodec.Shape{big, frag}, recon)
			if err != nil {
				t.Fatal(err)
			}
			got := codectest.DecodesToRecon(t, dec, wire, recon, name)
			bits := 8 * float64(len(wire)-len(alone)) / float64(frag.Len())
			ref := make([]float64, frag.Len())
			for i := range ref {
				ref[i] = float64(src[big.Len()+i])
			}
			e := metric.NMSE(got[big.Len():], ref)
			t.Logf("%s: the %d-value piece costs %.2f bits/value, NMSE %.3g", name, frag.Len(), bits, e)
			if name == "fp16" {
				if e != 0 || bits < 32 {
					t.Fatalf("fp16: small piece NMSE %g at %.2f bits/value, want raw", e, bits)
				}
				return
			}
			if bits > 10 {
				t.Fatalf("small piece costs %.2f bits/value, want an int8 frame (< 10)", bits)
			}
			if e > 1e-3 {
				t.Fatalf("small piece NMSE %g, want < 1e-3", e)
			}
			src[len(src)-3] = float32(math.Inf(-1))
			if _, err := enc.Encode("b", src, []gradcodec.Shape{big, frag}, recon); !errors.Is(err, gradcodec.ErrNonFinite) || !strings.Contains(err.Error(), "stream b") {
				t.Fatalf("-Inf in the small piece: %v, want ErrNonFinite naming the stream", err)
			}
		})
	}
}

// TestGradCodecSubChunkRates: sub-chunks that share an encoder keep their
// own rate control, so each lands near the target rate even when their
// contents differ (one smooth, one noise-like) and they alternate frame by
// frame.
func TestGradCodecSubChunkRates(t *testing.T) {
	const target = 1.4
	sh := gradcodec.Shape{Rows: 128, Cols: 256}
	enc := newGradCodec(t, "h264", true)
	rng := rand.New(rand.NewPCG(3, 4))
	for step := 0; step < 6; step++ {
		for sub := 0; sub < 2; sub++ {
			src := make([]float32, sh.Len())
			for i := range src {
				src[i] = float32(rng.NormFloat64())
				if sub == 0 { // a smooth field with a little noise
					r, c := i/sh.Cols, i%sh.Cols
					src[i] = 0.02*src[i] + float32(math.Sin(float64(r)/9+float64(step))*math.Cos(float64(c)/13))
				}
			}
			stream := fmt.Sprintf("b/rs/c0.s%d@%d+%d", sub, sub*sh.Len(), sh.Len())
			wire, err := enc.Encode(stream, src, []gradcodec.Shape{sh}, make([]float32, len(src)))
			if err != nil {
				t.Fatal(err)
			}
			bpv := 8 * float64(len(wire)) / float64(sh.Len())
			if step > 0 && (bpv > target*1.25 || bpv < target/1.25) {
				t.Errorf("step %d sub-chunk %d: %.2f bits/value, want %.1f within 25%%", step, sub, bpv, target)
			}
		}
	}
	if n := enc.OpenEncoders(); n != 1 {
		t.Errorf("%d encoders open, want the 2 sub-chunks on one", n)
	}
}

// TestGradCodecNilRecon: Encode without a recon (a reduce-scatter hop)
// sends the same bytes as with one, step after step, so its error feedback
// evolves the same; raw, int8 and video pieces alike.
func TestGradCodecNilRecon(t *testing.T) {
	for _, name := range []string{"int8", "h264", "hevc"} {
		t.Run(name, func(t *testing.T) {
			with, without := newGradCodec(t, name, true), newGradCodec(t, name, true)
			// A full matrix, a 1-D tensor, a small bias, a thin matrix.
			pieces := []gradcodec.Shape{{Rows: 96, Cols: 128}, {Rows: 1, Cols: 5003}, {Rows: 1, Cols: 100}, {Rows: 700, Cols: 7}}
			n := 0
			for _, p := range pieces {
				n += p.Len()
			}
			recon := make([]float32, n)
			for step := 0; step < 3; step++ {
				src := smooth(uint64(step), 1, n)
				a, err := with.Encode("s", src, pieces, recon)
				if err != nil {
					t.Fatal(err)
				}
				b, err := without.Encode("s", src, pieces, nil)
				if err != nil {
					t.Fatal(err)
				}
				if string(a) != string(b) {
					t.Fatalf("step %d: %d bytes with recon, %d without: they differ", step, len(a), len(b))
				}
			}
		})
	}
}
