package gradcodec_test

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/codectest"
	"github.com/vccl/vccl/internal/metric"
)

func TestRawIsExact(t *testing.T) {
	x := []float32{0, float32(math.Copysign(0, -1)), 1, -1, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, 1e-40, 3.14159}
	enc, dec := codectest.MustEncoder(t, "raw", 0), codectest.MustDecoder(t)
	y, h := codectest.RoundTrip(t, enc, dec, x, gradcodec.Shape{Rows: 1, Cols: len(x)})
	for i := range x {
		if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
			t.Errorf("raw value %d: got %v want %v", i, y[i], x[i])
		}
	}
	if want := gradcodec.HeaderSize + gradcodec.TrailerSize + 4*len(x); h.Size != want {
		t.Errorf("raw frame is %d bytes, want %d", h.Size, want)
	}
}

func TestBaselineRoundTrips(t *testing.T) {
	sh := gradcodec.Shape{Rows: 64, Cols: 300}
	x := codectest.GradientLike(7, sh.Rows, sh.Cols)
	for _, tc := range []struct {
		codec   string
		maxNMSE float64
		bpv     float64
	}{
		{"fp16", 1e-6, 16},
		{"bf16", 3e-5, 16},
		{"int8", 2e-3, 8},
	} {
		enc, dec := codectest.MustEncoder(t, tc.codec, 0), codectest.MustDecoder(t)
		y, h := codectest.RoundTrip(t, enc, dec, x, sh)
		if e := metric.NMSE32(y, x); e > tc.maxNMSE {
			t.Errorf("%s NMSE %.3g > %.3g", tc.codec, e, tc.maxNMSE)
		}
		if b := h.BitsPerValue(); b < tc.bpv || b > tc.bpv*1.1 {
			t.Errorf("%s costs %.3f bits/value, want about %v", tc.codec, b, tc.bpv)
		}
		codectest.CheckZeroRows(t, tc.codec, x, y, sh)
	}
}

func TestShapeFor(t *testing.T) {
	for _, n := range []int{1, 7, 16, 1000, 1024, 4096, 235146, 1 << 20, 999983} {
		s := gradcodec.ShapeFor(n)
		if s.Len() != n {
			t.Errorf("ShapeFor(%d) = %v, Len %d", n, s, s.Len())
		}
	}
	if s := gradcodec.ShapeFor(1 << 20); s != (gradcodec.Shape{Rows: 1024, Cols: 1024}) {
		t.Errorf("ShapeFor(1<<20) = %v", s)
	}
}

func TestEmptyTensor(t *testing.T) {
	for _, codec := range gradcodec.Codecs() {
		enc, dec := codectest.MustEncoder(t, codec, 1.4), codectest.MustDecoder(t)
		codectest.RoundTrip(t, enc, dec, nil, gradcodec.Shape{})
	}
}

func TestNonFinite(t *testing.T) {
	x := codectest.GradientLike(5, 16, 64)
	x[17] = float32(math.NaN())
	x[40] = float32(math.Inf(1))
	x[1000] = float32(math.Inf(-1))
	for _, codec := range gradcodec.Codecs() {
		enc := codectest.MustEncoder(t, codec, 1.4)
		out, err := enc.Encode([]byte("keep"), x, gradcodec.Shape{Rows: 16, Cols: 64})
		if !errors.Is(err, gradcodec.ErrNonFinite) {
			t.Fatalf("%s: err = %v, want ErrNonFinite", codec, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "3 of 1024") || !strings.Contains(msg, "index 17") || !strings.Contains(msg, codec) {
			t.Errorf("%s: message %q does not say how many, where, which codec", codec, msg)
		}
		if string(out) != "keep" {
			t.Errorf("%s: dst changed on error: %q", codec, out)
		}
	}
}

func TestShapeMismatch(t *testing.T) {
	x := codectest.GradientLike(5, 8, 64)
	for _, codec := range gradcodec.Codecs() {
		enc, dec := codectest.MustEncoder(t, codec, 1.4), codectest.MustDecoder(t)
		for _, sh := range []gradcodec.Shape{{8, 63}, {-8, -64}, {0, 512}} {
			if _, err := enc.Encode(nil, x, sh); !errors.Is(err, gradcodec.ErrShapeMismatch) {
				t.Errorf("%s Encode %v: err = %v, want ErrShapeMismatch", codec, sh, err)
			}
		}
		fr, err := enc.Encode(nil, x, gradcodec.Shape{Rows: 8, Cols: 64})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 511, 513} {
			err := dec.Decode(make([]float32, n), fr)
			if !errors.Is(err, gradcodec.ErrShapeMismatch) || !strings.Contains(err.Error(), "512") {
				t.Errorf("%s Decode into %d: err = %v, want gradcodec.ErrShapeMismatch naming 512", codec, n, err)
			}
		}
	}
}

func TestBadFrames(t *testing.T) {
	dec := codectest.MustDecoder(t)
	y := make([]float32, 24*48)
	for codec, fr := range codectest.SmallFrames(t) {
		// Every truncation.
		for n := 0; n < len(fr); n++ {
			if err := dec.Decode(y, fr[:n]); !errors.Is(err, gradcodec.ErrBadFrame) {
				t.Fatalf("%s truncated to %d of %d bytes: err = %v, want ErrBadFrame", codec, n, len(fr), err)
			}
		}
		// Trailing garbage.
		if err := dec.Decode(y, append(bytes.Clone(fr), 0)); !errors.Is(err, gradcodec.ErrBadFrame) {
			t.Errorf("%s with a trailing byte: err = %v", codec, err)
		}
		// Every single-bit flip is caught (header fields or checksum).
		for i := 0; i < len(fr); i++ {
			for bit := 0; bit < 8; bit += 3 {
				c := bytes.Clone(fr)
				c[i] ^= 1 << bit
				err := dec.Decode(y, c)
				if !errors.Is(err, gradcodec.ErrBadFrame) && !errors.Is(err, gradcodec.ErrShapeMismatch) {
					t.Fatalf("%s with bit %d of byte %d flipped: err = %v", codec, bit, i, err)
				}
			}
		}
		// The decoder still works after all that.
		if err := dec.Decode(y, fr); err != nil {
			t.Fatalf("%s after bad frames: %v", codec, err)
		}
	}
	for name, b := range map[string][]byte{
		"empty":   nil,
		"png":     []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x00\x00\x00\x00"),
		"zeros":   make([]byte, 200),
		"version": append([]byte("VCGC\x09"), make([]byte, 40)...),
	} {
		if err := dec.Decode(y, b); !errors.Is(err, gradcodec.ErrBadFrame) {
			t.Errorf("%s: err = %v, want ErrBadFrame", name, err)
		}
	}
}

func TestCloseIdempotent(t *testing.T) {
	for _, codec := range gradcodec.Codecs() {
		enc := codectest.MustEncoder(t, codec, 1.4)
		if _, err := enc.Encode(nil, make([]float32, 64), gradcodec.Shape{Rows: 1, Cols: 64}); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := enc.Encode(nil, make([]float32, 64), gradcodec.Shape{Rows: 1, Cols: 64}); err == nil {
			t.Errorf("%s: Encode after Close succeeded", codec)
		}
	}
	d := codectest.MustDecoder(t)
	d.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Decode(nil, nil); err == nil {
		t.Error("Decode after Close succeeded")
	}
}

func TestParseHeaderSplitsConcatenatedFrames(t *testing.T) {
	var wire []byte
	frames := codectest.SmallFrames(t)
	for _, codec := range gradcodec.Codecs() {
		wire = append(wire, frames[codec]...)
	}
	dec := codectest.MustDecoder(t)
	y := make([]float32, 24*48)
	for _, codec := range gradcodec.Codecs() {
		h, err := gradcodec.ParseHeader(wire)
		if err != nil {
			t.Fatal(err)
		}
		if h.Codec != codec {
			t.Fatalf("got %s, want %s", h.Codec, codec)
		}
		if err := dec.Decode(y, wire[:h.Size]); err != nil {
			t.Fatal(err)
		}
		wire = wire[h.Size:]
	}
	if len(wire) != 0 {
		t.Fatalf("%d bytes left", len(wire))
	}
}

func TestErrorFeedback(t *testing.T) {
	ef := gradcodec.NewErrorFeedback()
	x := []float32{1, 2, 3}
	ef.Apply("a", x) // no residual yet
	if x[0] != 1 {
		t.Fatal("Apply without residual changed x")
	}
	ef.Update("a", x, []float32{0.5, 2, 2})
	y := []float32{1, 1, 1}
	ef.Apply("a", y)
	if y[0] != 1.5 || y[1] != 1 || y[2] != 2 {
		t.Fatalf("Apply: %v", y)
	}
	z := []float32{1, 1}
	ef.Apply("a", z) // length changed: residual dropped
	if z[0] != 1 || ef.Residual("a") != nil {
		t.Fatalf("mismatched residual applied: %v", z)
	}
	// ApplyTo adds in the copy; ResidualFor hands out the slot to overwrite.
	ef.Reset("")
	ef.Update("c", []float32{1, 2, 3}, []float32{0.5, 2, 2})
	dst := make([]float32, 3)
	ef.ApplyTo("c", dst, []float32{10, 20, 30})
	if dst[0] != 10.5 || dst[1] != 20 || dst[2] != 31 {
		t.Fatalf("ApplyTo = %v", dst)
	}
	ef.ApplyTo("none", dst, []float32{7, 8, 9})
	if dst[0] != 7 || dst[2] != 9 {
		t.Fatalf("ApplyTo without a residual = %v", dst)
	}
	r := ef.ResidualFor("c", 3)
	r[0], r[1], r[2] = 4, 5, 6
	if got := ef.Residual("c"); got[0] != 4 || got[2] != 6 {
		t.Fatalf("ResidualFor slot not kept: %v", got)
	}
	ef.ApplyTo("c", make([]float32, 2), []float32{1, 1}) // other length: dropped
	if ef.Residual("c") != nil {
		t.Fatal("ApplyTo kept a residual of another length")
	}
	// Carry hands out the residual itself, zeros for a new key or length.
	ef.Update("d", []float32{1, 2, 3}, []float32{0.5, 2, 2})
	if c, kept := ef.Carry("d", 3); !kept || c[0] != 0.5 || c[2] != 1 {
		t.Fatalf("Carry = %v, %v", c, kept)
	} else {
		c[0] = 9
	}
	if got := ef.Residual("d"); got[0] != 9 {
		t.Fatalf("Carry slot not kept: %v", got)
	}
	if c, kept := ef.Carry("d", 2); kept || len(c) != 2 || c[0] != 0 || c[1] != 0 {
		t.Fatalf("Carry of another length = %v, %v, want zeros", c, kept)
	}
	if c, kept := ef.Carry("e", 2); kept || len(c) != 2 || c[0] != 0 {
		t.Fatalf("Carry of a new key = %v, %v", c, kept)
	}
	ef.Update("b", x, x)
	ef.Reset("")
	if ef.Residual("b") != nil {
		t.Fatal("Reset kept a residual")
	}
}

func TestEncodeReconMatchesDecoder(t *testing.T) {
	for _, codec := range gradcodec.Codecs() {
		enc, dec := codectest.MustEncoder(t, codec, 1.4), codectest.MustDecoder(t)
		for i, sh := range []gradcodec.Shape{{64, 300}, {700, 10}, {1, 999}} {
			x := codectest.GradientLike(uint64(70+i), sh.Rows, sh.Cols)
			recon := make([]float32, len(x))
			fr, err := gradcodec.EncodeRecon(enc, nil, []byte("pre"), x, sh, recon)
			if err != nil {
				t.Fatal(err)
			}
			if string(fr[:3]) != "pre" {
				t.Fatal("dst prefix lost")
			}
			y := make([]float32, len(x))
			if err := dec.Decode(y, fr[3:]); err != nil {
				t.Fatal(err)
			}
			for k := range y {
				if math.Float32bits(y[k]) != math.Float32bits(recon[k]) {
					t.Fatalf("%s %v: value %d: recon %v, decoder %v", codec, sh, k, recon[k], y[k])
				}
			}
		}
		// EncodeResidual: the same frame's recon, and src − recon beside it.
		re, ok := enc.(gradcodec.ResidualEncoder)
		if !ok {
			t.Fatalf("%s encoder is not a ResidualEncoder", codec)
		}
		sh := gradcodec.Shape{Rows: 64, Cols: 300}
		x := codectest.GradientLike(99, sh.Rows, sh.Cols)
		recon, res := make([]float32, len(x)), make([]float32, len(x))
		fr, err := re.EncodeResidual(nil, x, sh, recon, res)
		if err != nil {
			t.Fatal(err)
		}
		y := codectest.DecodesToRecon(t, dec, fr, recon, codec+" EncodeResidual")
		for k := range y {
			if math.Float32bits(res[k]) != math.Float32bits(x[k]-y[k]) {
				t.Fatalf("%s EncodeResidual value %d: x %v decoded %v recon %v residual %v", codec, k, x[k], y[k], recon[k], res[k])
			}
		}
		if _, err := re.EncodeResidual(nil, x, sh, recon, res[1:]); !errors.Is(err, gradcodec.ErrShapeMismatch) {
			t.Errorf("%s: short residual: %v", codec, err)
		}
		if _, err := gradcodec.EncodeRecon(enc, nil, nil, make([]float32, 8), gradcodec.Shape{Rows: 1, Cols: 8}, make([]float32, 7)); !errors.Is(err, gradcodec.ErrShapeMismatch) {
			t.Errorf("%s: short recon: %v", codec, err)
		}
	}
}

func TestUnknownCodecNamesWhatIsAvailable(t *testing.T) {
	_, err := gradcodec.NewEncoder(gradcodec.Options{Codec: "av1"})
	if !errors.Is(err, gradcodec.ErrUnknownCodec) || !strings.Contains(err.Error(), "int8") {
		t.Errorf("unknown codec: %v", err)
	}
	if _, err := gradcodec.NewDecoder("quantum"); !errors.Is(err, gradcodec.ErrBackendUnavailable) {
		t.Errorf("unknown decoder backend: %v", err)
	}
	if gradcodec.Registered("h264") {
		return // the video plug-in is linked (cgo): its own tests cover it
	}
	// Without the plug-in, asking for a video codec says how to get it, and
	// a video frame is refused as such rather than as garbage.
	_, err = gradcodec.NewEncoder(gradcodec.Options{Codec: "h264"})
	if !errors.Is(err, gradcodec.ErrUnknownCodec) || !strings.Contains(err.Error(), "gradcodec/video") {
		t.Errorf("h264 without the plug-in: %v", err)
	}
	if err := gradcodec.CheckRegistered("hevc"); err == nil || !strings.Contains(err.Error(), "cgo") {
		t.Errorf("CheckRegistered(hevc) without the plug-in: %v", err)
	}
	fr := append([]byte("VCGC\x01\x05"), make([]byte, 40)...)
	if _, err := gradcodec.ParseHeader(fr); !errors.Is(err, gradcodec.ErrBadFrame) || !strings.Contains(err.Error(), "gradcodec/video") {
		t.Errorf("h264 frame without the plug-in: %v", err)
	}
}

// TestDecodeFrameBoundsAllocation: a small frame whose header claims a huge
// tensor (the tensor codec sends 67M zeros in a few hundred bytes) is
// refused by DecodeFrame before it allocates the tensor.
func TestDecodeFrameBoundsAllocation(t *testing.T) {
	enc := codectest.MustEncoder(t, "tensor", 1.4)
	big := gradcodec.Shape{Rows: 8192, Cols: 8193}
	fr, err := enc.Encode(nil, make([]float32, big.Len()), big)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := gradcodec.DecodeFrame(fr); !errors.Is(err, gradcodec.ErrBadFrame) || !strings.Contains(err.Error(), "bound") {
		t.Errorf("DecodeFrame of %d values in %d bytes: err = %v, want ErrBadFrame naming the bound", big.Len(), len(fr), err)
	}
}

// TestStreamEncoderIsolatesRate: an encoder serving two streams (SetStream
// before each frame) gives each the frames a fresh encoder of its own would:
// neither stream's rate control sees the other's frames. The two streams
// differ in content (gradient-like and noise), so shared state would show.
func TestStreamEncoderIsolatesRate(t *testing.T) {
	sh := gradcodec.Shape{Rows: 64, Cols: 256}
	rng := rand.New(rand.NewPCG(5, 6))
	a := make([][]float32, 4)
	b := make([][]float32, 4)
	for i := range a {
		a[i] = codectest.GradientLike(uint64(30+i), sh.Rows, sh.Cols)
		b[i] = make([]float32, sh.Len())
		for k := range b[i] {
			b[i][k] = float32(rng.NormFloat64()) * 100
		}
	}
	n := 0
	for _, codec := range gradcodec.Codecs() {
		shared := codectest.MustEncoder(t, codec, 1.4)
		se, ok := shared.(gradcodec.StreamEncoder)
		if !ok {
			continue
		}
		n++
		alone := codectest.MustEncoder(t, codec, 1.4)
		for i := range a {
			want, err := alone.Encode(nil, a[i], sh)
			if err != nil {
				t.Fatal(err)
			}
			se.SetStream("b")
			if _, err := se.Encode(nil, b[i], sh); err != nil {
				t.Fatal(err)
			}
			se.SetStream("a")
			got, err := se.Encode(nil, a[i], sh)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Errorf("%s frame %d of stream a: %d bytes beside stream b, %d alone", codec, i, len(got), len(want))
			}
		}
	}
	if n == 0 {
		t.Fatal("no codec implements StreamEncoder")
	}
}
