package video

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/codectest"
	"github.com/vccl/vccl/internal/metric"
)

func TestVideoRoundTrips(t *testing.T) {
	shapes := []gradcodec.Shape{
		{Rows: 256, Cols: 784},  // row layout
		{Rows: 100, Cols: 40},   // narrow rows, padded to 48
		{Rows: 1, Cols: 5000},   // 1-D: flat layout
		{Rows: 3, Cols: 3},      // tiny
		{Rows: 5000, Cols: 32},  // taller than one frame: split in two
		{Rows: 700, Cols: 10},   // narrow: flat layout, scales shared by 26 rows
		{Rows: 16, Cols: 10000}, // rows wider than a picture: flat layout
	}
	for _, codec := range []string{"h264", "hevc"} {
		enc, dec := codectest.MustEncoder(t, codec, 1.4), codectest.MustDecoder(t)
		for i, sh := range shapes {
			x := codectest.GradientLike(uint64(10+i), sh.Rows, sh.Cols)
			y, h := codectest.RoundTrip(t, enc, dec, x, sh)
			e := metric.NMSE32(y, x)
			l := planLayout(sh)
			t.Logf("%s %v: layout %dx%d×%d bpv %.3f NMSE %.4f", codec, sh, l.W, l.FrameH, l.Frames, h.BitsPerValue(), e)
			if sh.Len() >= 4096 && e > 0.6 {
				t.Errorf("%s %v: NMSE %.3f > 0.6 at %.2f bits/value", codec, sh, e, h.BitsPerValue())
			}
			if e >= 1 && sh.Len() >= 256 || e > 1 {
				t.Errorf("%s %v: NMSE %.3f is worse than sending zeros", codec, sh, e)
			}
			codectest.CheckZeroRows(t, codec, x, y, sh)
		}
		if sh := (gradcodec.Shape{Rows: 5000, Cols: 32}); planLayout(sh).Frames < 2 {
			t.Errorf("%v fits one frame; the split is not tested", sh)
		}
	}
}

func TestVideoHighRateIsAccurate(t *testing.T) {
	sh := gradcodec.Shape{Rows: 128, Cols: 256}
	x := codectest.GradientLike(3, sh.Rows, sh.Cols)
	for _, codec := range []string{"h264", "hevc"} {
		enc, dec := codectest.MustEncoder(t, codec, 6), codectest.MustDecoder(t)
		y, h := codectest.RoundTrip(t, enc, dec, x, sh)
		if e := metric.NMSE32(y, x); e > 0.01 {
			t.Errorf("%s at %.2f bits/value: NMSE %.4f > 0.01", codec, h.BitsPerValue(), e)
		}
	}
}

func TestRateControlConvergence(t *testing.T) {
	if testing.Short() {
		t.Skip("encodes 40 frames per case")
	}
	sh := gradcodec.Shape{Rows: 256, Cols: 784}
	for _, tc := range []struct {
		codec  string
		target float64
	}{{"h264", 1.4}, {"hevc", 1.4}, {"h264", 0.8}, {"h264", 3}} {
		enc, dec := codectest.MustEncoder(t, tc.codec, tc.target), codectest.MustDecoder(t)
		var total, first float64
		const frames = 20
		for i := 0; i < frames; i++ {
			x := codectest.GradientLike(uint64(100+i), sh.Rows, sh.Cols)
			_, h := codectest.RoundTrip(t, enc, dec, x, sh)
			total += h.BitsPerValue()
			if i == 0 {
				first = h.BitsPerValue()
			}
		}
		avg := total / frames
		t.Logf("%s target %.2f: first frame %.3f, average over %d frames %.3f", tc.codec, tc.target, first, frames, avg)
		if math.Abs(avg/tc.target-1) > 0.10 {
			t.Errorf("%s target %.2f: average %.3f bits/value is more than 10%% off", tc.codec, tc.target, avg)
		}
		if math.Abs(first/tc.target-1) > 0.15 {
			t.Errorf("%s target %.2f: first frame %.3f bits/value is more than 15%% off", tc.codec, tc.target, first)
		}
	}
}

// TestCorruptVideoPayload rewrites the checksum after damaging the video
// bitstream, so the damage reaches FFmpeg's decoder: the result must be an
// error or finite values, never a panic.
func TestCorruptVideoPayload(t *testing.T) {
	dec := codectest.MustDecoder(t)
	y := make([]float32, 24*48)
	frames := codectest.SmallFrames(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, codec := range []string{"h264", "hevc"} {
		fr := frames[codec]
		h, _ := gradcodec.ParseHeader(fr)
		start := gradcodec.HeaderSize + 2*h.Scales
		bad := 0
		for i := 0; i < 200; i++ {
			c := bytes.Clone(fr)
			for j := 0; j < 1+rng.IntN(4); j++ {
				c[start+rng.IntN(h.Payload)] ^= byte(1 + rng.IntN(255))
			}
			codectest.FixChecksum(c)
			if err := dec.Decode(y, c); err != nil {
				if !errors.Is(err, gradcodec.ErrBadFrame) {
					t.Fatalf("%s: err = %v, want ErrBadFrame", codec, err)
				}
				bad++
				continue
			}
			for k, v := range y {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s: value %d decodes to %v", codec, k, v)
				}
			}
		}
		t.Logf("%s: %d of 200 damaged payloads rejected", codec, bad)
		if err := dec.Decode(y, fr); err != nil {
			t.Fatalf("%s: decoder broken after damaged payloads: %v", codec, err)
		}
	}
}

func TestStreamsChangeShape(t *testing.T) {
	for _, codec := range []string{"h264", "hevc"} {
		enc, dec := codectest.MustEncoder(t, codec, 1.4), codectest.MustDecoder(t)
		for i, sh := range []gradcodec.Shape{{Rows: 64, Cols: 128}, {Rows: 64, Cols: 256}, {Rows: 64, Cols: 128}, {Rows: 32, Cols: 128}} {
			x := codectest.GradientLike(uint64(i), sh.Rows, sh.Cols)
			y, _ := codectest.RoundTrip(t, enc, dec, x, sh)
			if e := metric.NMSE32(y, x); e > 0.6 {
				t.Errorf("%s %v: NMSE %.3f", codec, sh, e)
			}
		}
	}
}

// TestErrorFeedbackRemovesBias sends the same tensor 20 times through h264
// at a low rate: with error feedback the mean of what was received tracks
// the input much better than any single frame.
func TestErrorFeedbackRemovesBias(t *testing.T) {
	sh := gradcodec.Shape{Rows: 64, Cols: 256}
	x := codectest.GradientLike(11, sh.Rows, sh.Cols)
	enc, dec := codectest.MustEncoder(t, "h264", 1.0), codectest.MustDecoder(t)
	ef := gradcodec.NewErrorFeedback()
	sum := make([]float64, len(x))
	in := make([]float32, len(x))
	y := make([]float32, len(x))
	var single float64
	const steps = 20
	for s := 0; s < steps; s++ {
		copy(in, x)
		ef.Apply("w", in)
		fr, err := enc.Encode(nil, in, sh)
		if err != nil {
			t.Fatal(err)
		}
		if err := dec.Decode(y, fr); err != nil {
			t.Fatal(err)
		}
		ef.Update("w", in, y)
		if s == 0 {
			single = metric.NMSE32(y, x)
		}
		for i, v := range y {
			sum[i] += float64(v)
		}
	}
	mean := make([]float32, len(x))
	for i := range sum {
		mean[i] = float32(sum[i] / steps)
	}
	avg := metric.NMSE32(mean, x)
	t.Logf("NMSE of one frame %.4f, of the mean of %d with error feedback %.5f", single, steps, avg)
	if avg > single/8 {
		t.Errorf("error feedback: NMSE of the mean %.4f is not far below one frame's %.4f", avg, single)
	}
}

// TestRefitNeverWorseThanZeros: at a rate too low for the tensor, every scale
// group (rows sharing a scale) still decodes at least as well as zeros
// would. The tensor is a real
// gradient (the 10×128 output layer of the MNIST MLP at step 50), on which
// libx265 at 1 bit/value decoded with NMSE 1.28 before the scale refit.
func TestRefitNeverWorseThanZeros(t *testing.T) {
	b, err := os.ReadFile("testdata/mlp_w3_step50_10x128.f32")
	if err != nil {
		t.Fatal(err)
	}
	sh := gradcodec.Shape{Rows: 10, Cols: 128}
	x := make([]float32, sh.Len())
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	for _, codec := range []string{"h264", "hevc"} {
		for _, bpv := range []float64{0.6, 1.0, 1.4} {
			enc, dec := codectest.MustEncoder(t, codec, bpv), codectest.MustDecoder(t)
			y, h := codectest.RoundTrip(t, enc, dec, x, sh)
			if e := metric.NMSE32(y, x); e > 1 || (bpv >= 1 && e >= 1) {
				t.Errorf("%s at %.2f bits/value: NMSE %.4f is no better than zeros", codec, h.BitsPerValue(), e)
			}
			// The refit fits one scale per group of rows sharing a scale.
			g := gradcodec.ScaleGroupRows(sh) * sh.Cols
			for lo := 0; lo < len(x); lo += g {
				hi := min(lo+g, len(x))
				if e := metric.NMSE32(y[lo:hi], x[lo:hi]); e > 1.001 {
					t.Errorf("%s at %.2f bits/value scale group at %d: NMSE %.4f > 1", codec, h.BitsPerValue(), lo/sh.Cols, e)
				}
			}
		}
	}
}

// nalTypes lists the NAL unit types of an Annex-B access unit.
func nalTypes(au []byte, hevc bool) []int {
	var types []int
	for i := 0; i+3 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 {
			h := au[i+3]
			if hevc {
				types = append(types, int(h>>1)&0x3f)
			} else {
				types = append(types, int(h)&0x1f)
			}
			i += 3
		}
	}
	return types
}

func TestFramesCarryNoSEI(t *testing.T) {
	for codec, fr := range codectest.SmallFrames(t) {
		if codec != "h264" && codec != "hevc" {
			continue
		}
		h, err := gradcodec.ParseHeader(fr)
		if err != nil {
			t.Fatal(err)
		}
		body := fr[gradcodec.HeaderSize+2*h.Scales+h.ZeroMap : h.Size-gradcodec.TrailerSize]
		n := binary.LittleEndian.Uint32(body)
		types := nalTypes(body[4:4+n], codec == "hevc")
		t.Logf("%s NAL types %v", codec, types)
		if len(types) < 2 {
			t.Fatalf("%s: access unit has NAL types %v", codec, types)
		}
		for _, ty := range types {
			if (codec == "h264" && ty == 6) || (codec == "hevc" && (ty == 39 || ty == 40)) {
				t.Errorf("%s: SEI NAL %d left in the frame", codec, ty)
			}
		}
	}
	au := []byte{0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x06, 9, 9, 0, 0, 0, 1, 0x65, 7}
	got := appendWithoutSEI(nil, au, gradcodec.IDH264)
	if want := []byte{0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 7}; !bytes.Equal(got, want) {
		t.Errorf("appendWithoutSEI = %x, want %x", got, want)
	}
}

func TestSmallTensorsGoInt8(t *testing.T) {
	for _, codec := range []string{"h264", "hevc"} {
		enc, dec := codectest.MustEncoder(t, codec, 1.4), codectest.MustDecoder(t)
		sh := gradcodec.Shape{Rows: 16, Cols: 16}
		x := codectest.GradientLike(1, sh.Rows, sh.Cols)
		y, h := codectest.RoundTrip(t, enc, dec, x, sh)
		if h.Codec != "int8" || metric.NMSE32(y, x) > 1e-3 {
			t.Errorf("%s on %v: frame codec %s, NMSE %.4f", codec, sh, h.Codec, metric.NMSE32(y, x))
		}
		sh = gradcodec.Shape{Rows: 8, Cols: 128}
		x = codectest.GradientLike(2, sh.Rows, sh.Cols)
		if _, h := codectest.RoundTrip(t, enc, dec, x, sh); h.Codec != codec {
			t.Errorf("%s on %v (%d values): frame codec %s", codec, sh, sh.Len(), h.Codec)
		}
	}
}

func TestUnknownCodecAndBackend(t *testing.T) {
	_, err := gradcodec.NewEncoder(gradcodec.Options{Codec: "av1"})
	if !errors.Is(err, gradcodec.ErrUnknownCodec) || !strings.Contains(err.Error(), "hevc") {
		t.Errorf("unknown codec: %v", err)
	}
	_, err = gradcodec.NewEncoder(gradcodec.Options{Codec: "h264", Backend: "quantum"})
	if !errors.Is(err, gradcodec.ErrBackendUnavailable) {
		t.Errorf("unknown backend: %v", err)
	}
	if _, err := gradcodec.NewDecoder("quantum"); !errors.Is(err, gradcodec.ErrBackendUnavailable) {
		t.Errorf("unknown decoder backend: %v", err)
	}
	for _, codec := range []string{"h264", "hevc"} {
		if hwEncoderAvailable(codec) {
			t.Logf("%s NVENC present; not testing its absence", codec)
			continue
		}
		_, err := gradcodec.NewEncoder(gradcodec.Options{Codec: codec, Backend: "nvenc"})
		if !errors.Is(err, gradcodec.ErrBackendUnavailable) || !strings.Contains(err.Error(), swEncoders[codec]) {
			t.Errorf("%s nvenc: err = %v, want gradcodec.ErrBackendUnavailable naming %s", codec, err, swEncoders[codec])
		}
		enc, err := gradcodec.NewEncoder(gradcodec.Options{Codec: codec, Backend: "auto"})
		if err != nil {
			t.Fatalf("%s auto must fall back to software: %v", codec, err)
		}
		if b := enc.(*videoEncoder).Backend(); b != swEncoders[codec] {
			t.Errorf("%s auto picked %s", codec, b)
		}
		enc.Close()
	}
	if !hwDecoderAvailable("h264") && !hwDecoderAvailable("hevc") {
		if _, err := gradcodec.NewDecoder("nvenc"); !errors.Is(err, gradcodec.ErrBackendUnavailable) {
			t.Errorf("decoder nvenc: %v", err)
		}
	}
	if _, err := gradcodec.NewEncoder(gradcodec.Options{Codec: "h264", Backend: "software", Preset: "ludicrous"}); err == nil {
		t.Errorf("a bad preset must fail in NewEncoder")
	}
}

// TestThreadsKeepReconExact: with several codec threads (x264 slices, x265
// wavefronts) the encoder's reconstruction still equals what a decoder
// yields, bit for bit.
func TestThreadsKeepReconExact(t *testing.T) {
	for _, codec := range []string{"h264", "hevc"} {
		enc, err := gradcodec.NewEncoder(gradcodec.Options{Codec: codec, Backend: "software", BitsPerValue: 1.4, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		dec := codectest.MustDecoder(t)
		sh := gradcodec.Shape{Rows: 256, Cols: 512}
		x := codectest.GradientLike(5, sh.Rows, sh.Cols)
		recon := make([]float32, len(x))
		for step := 0; step < 2; step++ {
			fr, err := enc.(gradcodec.ReconEncoder).EncodeRecon(nil, x, sh, recon)
			if err != nil {
				t.Fatal(err)
			}
			codectest.DecodesToRecon(t, dec, fr, recon, codec+" threads 2")
		}
	}
	if _, err := gradcodec.NewEncoder(gradcodec.Options{Codec: "h264", Threads: -1}); err == nil {
		t.Error("Threads -1 accepted")
	}
}

// TestFeedbackMatchesApplyThenResidual: EncodeFeedback (the residual added
// in the quantisation pass) gives, bit for bit, the frames, recon and new
// residual of ErrorFeedback.ApplyTo followed by EncodeResidual, over the
// layouts (rows, flat, zero map, two frames, int8 for tiny tensors) and
// steps with a rate search; with recon nil (a reduce-scatter hop) it gives
// the same frames and residual; a finite value whose residual overflows it
// is refused.
func TestFeedbackMatchesApplyThenResidual(t *testing.T) {
	shapes := []gradcodec.Shape{{Rows: 256, Cols: 784}, {Rows: 1, Cols: 5000}, {Rows: 700, Cols: 10}, {Rows: 5000, Cols: 32}, {Rows: 3, Cols: 3}}
	for _, codec := range []string{"h264", "hevc"} {
		a := codectest.MustEncoder(t, codec, 1.4).(gradcodec.ResidualEncoder)
		b := codectest.MustEncoder(t, codec, 1.4).(gradcodec.FeedbackEncoder)
		c := codectest.MustEncoder(t, codec, 1.4).(gradcodec.FeedbackEncoder) // recon nil
		dec := codectest.MustDecoder(t)
		efA, efB, efC := gradcodec.NewErrorFeedback(), gradcodec.NewErrorFeedback(), gradcodec.NewErrorFeedback()
		for i, sh := range shapes {
			key := fmt.Sprint(sh)
			for step := 0; step < 3; step++ {
				x := codectest.GradientLike(uint64(100*i+step), sh.Rows, sh.Cols)
				if step == 2 {
					for k := range x {
						x[k] *= 3 // far off the rate: encoded twice
					}
				}
				in := make([]float32, len(x))
				recA, recB := make([]float32, len(x)), make([]float32, len(x))
				efA.ApplyTo(key, in, x)
				frA, err := a.EncodeResidual(nil, in, sh, recA, efA.ResidualFor(key, len(x)))
				if err != nil {
					t.Fatal(err)
				}
				res, _ := efB.Carry(key, len(x))
				frB, err := b.EncodeFeedback(nil, x, sh, recB, res)
				if err != nil {
					t.Fatal(err)
				}
				resC, _ := efC.Carry(key, len(x))
				frC, err := c.EncodeFeedback(nil, x, sh, nil, resC)
				if err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("%s %v step %d", codec, sh, step)
				if !bytes.Equal(frA, frB) {
					t.Fatalf("%s: EncodeFeedback's frame differs from ApplyTo+EncodeResidual's", what)
				}
				if !bytes.Equal(frC, frB) {
					t.Fatalf("%s: EncodeFeedback's frame without recon differs from the one with", what)
				}
				sameBits(t, what+" recon", recB, recA)
				sameBits(t, what+" residual", efB.Residual(key), efA.Residual(key))
				sameBits(t, what+" residual without recon", efC.Residual(key), efB.Residual(key))
				codectest.DecodesToRecon(t, dec, frB, recB, what)
			}
		}
		sh := gradcodec.Shape{Rows: 64, Cols: 64}
		x := make([]float32, sh.Len())
		res := make([]float32, sh.Len())
		x[100], res[100] = math.MaxFloat32, math.MaxFloat32
		if _, err := b.EncodeFeedback(nil, x, sh, make([]float32, len(x)), res); !errors.Is(err, gradcodec.ErrNonFinite) {
			t.Errorf("%s: value plus residual overflowing to +Inf: err %v, want ErrNonFinite", codec, err)
		}
	}
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: [%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}

// TestEarlierTrialKeepsItsReconstruction: a one-frame picture's
// reconstruction is read in place from the encoder, so when the rate
// search encodes again in the same context the earlier trial (which may
// still be the best) must get its own copy, equal to what a decoder yields
// for its access unit.
func TestEarlierTrialKeepsItsReconstruction(t *testing.T) {
	for _, codec := range []string{"h264", "hevc"} {
		enc := codectest.MustEncoder(t, codec, 1.4).(*videoEncoder)
		sh := gradcodec.Shape{Rows: 64, Cols: 256}
		x := codectest.GradientLike(3, sh.Rows, sh.Cols)
		l := planLayout(sh)
		enc.pix = resize(enc.pix, l.W*l.FrameH*l.Frames)
		t0, t1 := &enc.trials[0], &enc.trials[1]
		if err := enc.encodeAt(t0, x, nil, sh, l, 24, nil); err != nil {
			t.Fatal(err)
		}
		if !t0.live {
			t.Fatalf("%s: a one-frame picture's reconstruction was copied, not read in place", codec)
		}
		if err := enc.encodeAt(t1, x, nil, sh, l, 40, nil); err != nil {
			t.Fatal(err)
		}
		if t0.live || !t1.live {
			t.Fatalf("%s: after a second encode the first trial still reads the encoder's picture", codec)
		}
		d := newVideoDecoder(codec, "software")
		defer d.Close()
		if err := d.pixels(l, t0.payload); err != nil {
			t.Fatal(err)
		}
		for y := 0; y < l.FrameH; y++ {
			if !bytes.Equal(t0.rec[y*t0.recStride:y*t0.recStride+l.W], d.pix[y*l.W:(y+1)*l.W]) {
				t.Fatalf("%s: row %d of the kept reconstruction differs from the decoded picture", codec, y)
			}
		}
	}
}

// TestLargeDecodeMatchesRecon decodes a tensor of streamMinBytes, which
// readRows writes with non-temporal stores, and checks it is bit for bit
// the reconstruction the encoder computed with plain stores.
func TestLargeDecodeMatchesRecon(t *testing.T) {
	sh := gradcodec.Shape{Rows: 2048, Cols: streamMinBytes / 4 / 2048}
	enc := codectest.MustEncoder(t, "h264", 1.4).(gradcodec.ReconEncoder)
	dec := codectest.MustDecoder(t)
	x := codectest.GradientLike(9, sh.Rows, sh.Cols)
	recon := make([]float32, len(x))
	fr, err := enc.EncodeRecon(nil, x, sh, recon)
	if err != nil {
		t.Fatal(err)
	}
	codectest.DecodesToRecon(t, dec, fr, recon, "h264 2048x2048")
}

// TestRefitPairsMatchOneGroupAtATime: the refit of one-row groups, which
// takes them in pairs (a row of the first half with its partner in the
// second), gives every group the scale, reconstruction and residual that
// refitting that group alone gives, bit for bit: even and odd row counts,
// a row stride wider than the tensor, a group of zero scale and one whose
// levels anti-correlate with the input, with and without recon and
// residual, the residual in place of the input too.
func TestRefitPairsMatchOneGroupAtATime(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, sh := range []gradcodec.Shape{{Rows: 2, Cols: 256}, {Rows: 7, Cols: 300}, {Rows: 64, Cols: 1000}, {Rows: 33, Cols: 4096}} {
		if gradcodec.ScaleGroupRows(sh) != 1 {
			t.Fatalf("%v: groups of %d rows; want one-row groups", sh, gradcodec.ScaleGroupRows(sh))
		}
		l := planLayout(sh)
		stride := l.W + 32
		x := codectest.GradientLike(uint64(sh.Rows), sh.Rows, sh.Cols)
		pix := make([]byte, sh.Rows*stride)
		scales := make([]uint16, sh.Rows)
		for r := range sh.Rows {
			var ss float64
			for _, v := range x[r*sh.Cols : (r+1)*sh.Cols] {
				ss += float64(v) * float64(v)
			}
			sc := float32(4 * math.Sqrt(ss/float64(sh.Cols)))
			scales[r] = gradcodec.ToBF16(sc)
			for c := range sh.Cols {
				q := 128 + math.Round(127*float64(x[r*sh.Cols+c]/sc)) + float64(rng.IntN(5)-2)
				if r == 1 {
					q = 256 - q // anti-correlated: the refit zeroes the scale
				}
				pix[r*stride+c] = byte(min(max(q, 1), 255))
			}
		}
		scales[sh.Rows-1] = 0
		for _, mode := range []string{"recon+residual", "residual", "residual in place", "recon", "scales"} {
			var recon, res, wantRecon, wantRes []float32
			src := append([]float32(nil), x...)
			if strings.Contains(mode, "recon") {
				recon, wantRecon = make([]float32, len(x)), make([]float32, len(x))
			}
			if strings.Contains(mode, "residual") {
				res, wantRes = make([]float32, len(x)), make([]float32, len(x))
			}
			if mode == "residual in place" {
				res = src
			}
			got := append([]uint16(nil), scales...)
			refitRecon(recon, res, got, nil, pix, stride, src, sh, l)
			one := gradcodec.Shape{Rows: 1, Cols: sh.Cols}
			for r := range sh.Rows {
				want := []uint16{scales[r]}
				row := func(v []float32) []float32 {
					if v == nil {
						return nil
					}
					return v[r*sh.Cols : (r+1)*sh.Cols]
				}
				refitRecon(row(wantRecon), row(wantRes), want, nil, pix[r*stride:], stride, x[r*sh.Cols:(r+1)*sh.Cols], one, planLayout(one))
				if got[r] != want[0] {
					t.Fatalf("%v %s: row %d scale %#x, alone %#x", sh, mode, r, got[r], want[0])
				}
			}
			what := fmt.Sprintf("%v %s", sh, mode)
			if recon != nil {
				sameBits(t, what+" recon", recon, wantRecon)
			}
			if res != nil {
				sameBits(t, what+" residual", res, wantRes)
			}
			if got[1] != 0 || got[sh.Rows-1] != 0 {
				t.Fatalf("%s: scales of the anti-correlated and the zero group %#x %#x, want 0", what, got[1], got[sh.Rows-1])
			}
		}
	}
}

// TestSteadyStateEncodeAllocatesNothing: once a stream has run, a frame
// with error feedback, with and without recon (as a ring hop encodes it),
// allocates nothing. (A decode still allocates once: go-astiav boxes the
// EAGAIN of the check that an access unit holds one picture.)
func TestSteadyStateEncodeAllocatesNothing(t *testing.T) {
	sh := gradcodec.Shape{Rows: 64, Cols: 256}
	x := codectest.GradientLike(5, sh.Rows, sh.Cols)
	for _, codec := range []string{"h264", "hevc"} {
		enc := codectest.MustEncoder(t, codec, 1.4).(gradcodec.FeedbackEncoder)
		ef := gradcodec.NewErrorFeedback()
		recon := make([]float32, len(x))
		var fr []byte
		var err error
		step := func(withRecon bool) {
			rec := recon
			if !withRecon {
				rec = nil
			}
			res, _ := ef.Carry("s", len(x))
			if fr, err = enc.EncodeFeedback(fr[:0], x, sh, rec, res); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 4; i++ {
			step(i%2 == 0)
		}
		for _, withRecon := range []bool{false, true} {
			if n := testing.AllocsPerRun(5, func() { step(withRecon) }); n != 0 {
				t.Errorf("%s (recon %v): %.1f allocations per frame in steady state", codec, withRecon, n)
			}
		}
	}
}
