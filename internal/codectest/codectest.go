// Package codectest holds what the tests of gradcodec, its plug-ins and the
// ring share: a seeded gradient-like tensor, encoders and decoders that
// close themselves at the end of a test, a checked round trip, a check that
// a frame decodes to its encoder's reconstruction, and a checksum fixer for tests that damage frames on purpose.
package codectest

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vccl/vccl/gradcodec"
)

// GradientLike returns a seeded rows×cols tensor shaped like a weight
// gradient of a ReLU layer: a sum over a small batch of outer products of
// heavy-tailed output deltas and sparse non-negative inputs, with dead
// units (zero rows) and inputs that are always zero (zero columns).
func GradientLike(seed uint64, rows, cols int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	const batch = 16
	deltas := make([]float64, rows*batch)
	for r := 0; r < rows; r++ {
		if rng.Float64() < 0.1 { // dead unit
			continue
		}
		unit := math.Exp(rng.NormFloat64()) // per-unit scale
		for b := 0; b < batch; b++ {
			if rng.Float64() < 0.5 {
				continue // ReLU inactive for this sample
			}
			t := rng.NormFloat64() / math.Sqrt(rng.ExpFloat64()) // heavy tail
			deltas[r*batch+b] = unit * t * 1e-3
		}
	}
	inputs := make([]float64, batch*cols)
	for c := 0; c < cols; c++ {
		if rng.Float64() < 0.15 { // input that is always zero
			continue
		}
		for b := 0; b < batch; b++ {
			if rng.Float64() < 0.6 {
				inputs[b*cols+c] = rng.Float64()
			}
		}
	}
	out := make([]float32, rows*cols)
	for r := 0; r < rows; r++ {
		for b := 0; b < batch; b++ {
			d := deltas[r*batch+b]
			if d == 0 {
				continue
			}
			for c := 0; c < cols; c++ {
				out[r*cols+c] += float32(d * inputs[b*cols+c])
			}
		}
	}
	return out
}

// MustEncoder returns an encoder of codec at bpv bits per value on the
// software backend, closed when the test ends.
func MustEncoder(t testing.TB, codec string, bpv float64) gradcodec.Encoder {
	t.Helper()
	opts := gradcodec.DefaultOptions()
	opts.Codec = codec
	opts.Backend = "software"
	opts.BitsPerValue = bpv
	enc, err := gradcodec.NewEncoder(opts)
	if err != nil {
		t.Fatalf("NewEncoder(%s): %v", codec, err)
	}
	t.Cleanup(func() { enc.Close() })
	return enc
}

// MustDecoder returns a software Decoder, closed when the test ends.
func MustDecoder(t testing.TB) *gradcodec.Decoder {
	t.Helper()
	d, err := gradcodec.NewDecoder("software")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// IsVideo reports whether codec is one of the video codecs, which send
// tensors too small for a picture as int8 frames.
func IsVideo(codec string) bool { return codec == "h264" || codec == "hevc" }

// RoundTrip encodes x as sh, checks the frame's header and decodes it.
func RoundTrip(t testing.TB, enc gradcodec.Encoder, dec *gradcodec.Decoder, x []float32, sh gradcodec.Shape) ([]float32, gradcodec.Header) {
	t.Helper()
	fr, err := enc.Encode(nil, x, sh)
	if err != nil {
		t.Fatalf("%s Encode %v: %v", enc.Name(), sh, err)
	}
	h, err := gradcodec.ParseHeader(fr)
	if err != nil {
		t.Fatalf("%s ParseHeader: %v", enc.Name(), err)
	}
	codecOK := h.Codec == enc.Name() || (IsVideo(enc.Name()) && h.Codec == "int8" && sh.Len() < 4096)
	if h.Size != len(fr) || !codecOK || h.Shape != sh {
		t.Fatalf("%s header %+v for a %d-byte frame of %v", enc.Name(), h, len(fr), sh)
	}
	y := make([]float32, len(x))
	if err := dec.Decode(y, fr); err != nil {
		t.Fatalf("%s Decode %v: %v", enc.Name(), sh, err)
	}
	return y, h
}

// FrameDecoder is what DecodesToRecon decodes with: a gradcodec.Decoder or
// a ring codec.
type FrameDecoder interface {
	Decode(dst []float32, frame []byte) error
}

// DecodesToRecon decodes frame into a new slice of len(recon) values and
// fails the test unless they are bit-identical to recon, the reconstruction
// the frame's encoder reported; what names the case. It returns the decoded
// values.
func DecodesToRecon(t testing.TB, dec FrameDecoder, frame []byte, recon []float32, what string) []float32 {
	t.Helper()
	y := make([]float32, len(recon))
	if err := dec.Decode(y, frame); err != nil {
		t.Fatal(err)
	}
	for i := range y {
		if math.Float32bits(y[i]) != math.Float32bits(recon[i]) {
			t.Fatalf("%s value %d: decoded %v, recon %v", what, i, y[i], recon[i])
		}
	}
	return y
}

// SmallFrames returns one valid 24×48 frame per registered codec.
func SmallFrames(t testing.TB) map[string][]byte {
	frames := map[string][]byte{}
	sh := gradcodec.Shape{Rows: 24, Cols: 48}
	x := GradientLike(9, sh.Rows, sh.Cols)
	for _, codec := range gradcodec.Codecs() {
		enc := MustEncoder(t, codec, 2)
		fr, err := enc.Encode(nil, x, sh)
		if err != nil {
			t.Fatal(err)
		}
		frames[codec] = fr
	}
	return frames
}

// FixChecksum rewrites the CRC-32C trailer of a frame after a test edited
// it, so that the damage reaches the payload decoder.
func FixChecksum(fr []byte) {
	if len(fr) < gradcodec.TrailerSize {
		return
	}
	body := fr[:len(fr)-gradcodec.TrailerSize]
	binary.LittleEndian.PutUint32(fr[len(fr)-gradcodec.TrailerSize:], crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
}

// CheckZeroRows verifies that all-zero rows decode as exact zeros and that
// the test data has some.
func CheckZeroRows(t testing.TB, codec string, x, y []float32, sh gradcodec.Shape) {
	t.Helper()
	zeros := 0
	for r := 0; r < sh.Rows; r++ {
		row := x[r*sh.Cols : (r+1)*sh.Cols]
		allZero := true
		for _, v := range row {
			allZero = allZero && v == 0
		}
		if !allZero {
			continue
		}
		zeros++
		for c, v := range y[r*sh.Cols : (r+1)*sh.Cols] {
			if v != 0 {
				t.Fatalf("%s: zero row %d decodes to %v at column %d", codec, r, v, c)
			}
		}
	}
	if zeros == 0 && sh.Rows > 32 {
		t.Fatalf("test data %v has no zero rows", sh)
	}
}
