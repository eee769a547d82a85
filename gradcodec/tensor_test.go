package gradcodec

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// tensorTestGrad returns a seeded rows×cols Laplacian tensor whose scale
// varies by row and by column, with dead rows and columns (all zero) and
// rare outliers: what the context classes and escapes are for.
func tensorTestGrad(seed uint64, rows, cols int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	rs := make([]float64, rows)
	cs := make([]float64, cols)
	for i := range rs {
		if rng.IntN(10) > 0 {
			rs[i] = math.Exp(rng.NormFloat64())
		}
	}
	for j := range cs {
		if rng.IntN(8) > 0 {
			cs[j] = math.Exp(0.7 * rng.NormFloat64())
		}
	}
	x := make([]float32, rows*cols)
	for i := range rows {
		for j := range cols {
			v := rng.ExpFloat64() * rs[i] * cs[j] * 1e-3
			if rng.IntN(2) == 0 {
				v = -v
			}
			if rng.IntN(5000) == 0 {
				v *= 300
			}
			x[i*cols+j] = float32(v)
		}
	}
	return x
}

func tensorNMSE(x, y []float32) float64 {
	var e, s float64
	for i := range x {
		d := float64(x[i]) - float64(y[i])
		e += d * d
		s += float64(x[i]) * float64(x[i])
	}
	if s == 0 {
		return e
	}
	return e / s
}

// tensorRoundTrip encodes src with e and decodes it with d, returning the
// decoded values and the bits per value of the whole frame.
func tensorRoundTrip(t testing.TB, e *tensorEncoder, d *tensorDecoder, src []float32, s Shape) ([]float32, float64) {
	t.Helper()
	p, err := e.appendPayload(nil, src, s)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(src))
	if err := d.decodePayload(out, s, p); err != nil {
		t.Fatal(err)
	}
	return out, 8 * float64(len(p)+HeaderSize+TrailerSize) / float64(len(src))
}

// TestTensorRateAndQuality checks the rate control (every tensor of 16K
// values or more within ±10% of the target from the second frame of a
// stream on) and that the error falls as the rate rises, on shapes that
// exercise row maps, column maps, escapes and several blocks.
func TestTensorRateAndQuality(t *testing.T) {
	shapes := []Shape{{256, 784}, {128, 256}, {64, 64}, {3000, 1}, {1, 20000}}
	rates, frames := []float64{0.5, 1, 1.4, 2, 3}, 3
	if testing.Short() {
		rates, frames = []float64{0.5, 1.4, 3}, 2
	} else {
		shapes = append(shapes, Shape{1024, 1100})
	}
	for _, sh := range shapes {
		x := tensorTestGrad(1, sh.Rows, sh.Cols)
		last := math.Inf(1)
		for _, bpv := range rates {
			e := newTensorEncoder(bpv)
			var d tensorDecoder
			tensorRoundTrip(t, e, &d, x, sh)
			for frame := 2; frame <= frames; frame++ {
				y, got := tensorRoundTrip(t, e, &d, x, sh)
				err := tensorNMSE(x, y)
				t.Logf("%dx%d target %.1f frame %d: %.3f bits/value, NMSE %.4f", sh.Rows, sh.Cols, bpv, frame, got, err)
				if sh.Len() >= 16<<10 && math.Abs(got-bpv) > 0.1*bpv {
					t.Errorf("%dx%d target %.1f frame %d: %.3f bits/value", sh.Rows, sh.Cols, bpv, frame, got)
				}
				if frame == 2 && err >= last {
					t.Errorf("%dx%d target %.1f: NMSE %.4f, not below %.4f at the lower rate", sh.Rows, sh.Cols, bpv, err, last)
				}
				if frame == 2 {
					last = err
				}
				for i, v := range x {
					if v == 0 && y[i] != 0 {
						t.Fatalf("%dx%d: exact zero %d decodes to %v", sh.Rows, sh.Cols, i, y[i])
					}
				}
			}
		}
	}
}

// TestTensorEdgeValues covers all-zero tensors, constant tensors, one
// huge outlier (escapes beyond int8), tiny and huge magnitudes.
func TestTensorEdgeValues(t *testing.T) {
	sh := Shape{40, 50}
	cases := map[string]func(i int) float32{
		"zeros":    func(int) float32 { return 0 },
		"constant": func(int) float32 { return 0.25 },
		"outlier": func(i int) float32 {
			if i == 77 {
				return 1e6
			}
			return float32(i%7-3) * 1e-3
		},
		"tiny":  func(i int) float32 { return float32(i%5-2) * 1e-30 },
		"huge":  func(i int) float32 { return float32(i%5-2) * 1e30 },
		"ramp":  func(i int) float32 { return float32(i) },
		"signs": func(i int) float32 { return float32(1 - 2*(i%2)) },
		// All subnormal (a frozen or vanishing layer): below the smallest
		// step they decode as zeros, and must neither panic nor hang.
		"subnormal-1e-41": func(i int) float32 { return float32(i%5-2) * 1e-41 },
		"subnormal-min":   func(i int) float32 { return float32(i%3-1) * math.SmallestNonzeroFloat32 },
	}
	for name, f := range cases {
		x := make([]float32, sh.Len())
		for i := range x {
			x[i] = f(i)
		}
		for _, bpv := range []float64{0.5, 1.4, 8} {
			e := newTensorEncoder(bpv)
			var d tensorDecoder
			y, got := tensorRoundTrip(t, e, &d, x, sh)
			err := tensorNMSE(x, y)
			t.Logf("%s @%.1f: %.3f bits/value, NMSE %.3g", name, bpv, got, err)
			for i, v := range y {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s: value %d decodes to %v", name, i, v)
				}
			}
			if bpv == 8 && err > 1e-2 && !strings.HasPrefix(name, "subnormal") {
				t.Errorf("%s at 8 bits/value: NMSE %.3g", name, err)
			}
		}
	}
}

// TestTensorRepeatedColumns checks that columns repeating an earlier one
// (constant inputs) are sent once and decode bit for bit like their
// original, and that this lowers the error at the same rate.
func TestTensorRepeatedColumns(t *testing.T) {
	sh := Shape{64, 300}
	x := tensorTestGrad(11, sh.Rows, sh.Cols)
	for j := 200; j < 300; j++ { // a third of the columns repeat column 7 or 9
		src := 7 + 2*(j%2)
		for r := range sh.Rows {
			x[r*sh.Cols+j] = x[r*sh.Cols+src]
		}
	}
	e := newTensorEncoder(1.4)
	var d tensorDecoder
	tensorRoundTrip(t, e, &d, x, sh)
	y, got := tensorRoundTrip(t, e, &d, x, sh)
	if len(e.dups) != 100 {
		t.Fatalf("found %d repeated columns, want 100", len(e.dups))
	}
	for r := range sh.Rows {
		for j := 200; j < 300; j++ {
			if a, b := y[r*sh.Cols+j], y[r*sh.Cols+7+2*(j%2)]; math.Float32bits(a) != math.Float32bits(b) {
				t.Fatalf("row %d: column %d decodes to %v, its original to %v", r, j, a, b)
			}
		}
	}
	// The same values with each repeat perturbed by its own tiny factor
	// cannot use the list: the error at the same rate must be higher.
	x2 := append([]float32(nil), x...)
	for r := range sh.Rows {
		for j := 200; j < 300; j++ {
			x2[r*sh.Cols+j] *= 1 + float32(j)*1e-6
		}
	}
	e2 := newTensorEncoder(1.4)
	tensorRoundTrip(t, e2, &d, x2, sh)
	y2, got2 := tensorRoundTrip(t, e2, &d, x2, sh)
	if len(e2.dups) != 0 {
		t.Fatalf("found %d repeated columns in perturbed data", len(e2.dups))
	}
	t.Logf("with repeats: %.3f bits/value, NMSE %.4f; perturbed: %.3f, %.4f", got, tensorNMSE(x, y), got2, tensorNMSE(x2, y2))
	if tensorNMSE(x, y) >= tensorNMSE(x2, y2) {
		t.Errorf("repeated columns did not lower the error: %.4f vs %.4f", tensorNMSE(x, y), tensorNMSE(x2, y2))
	}
}

// FuzzTensorPayload feeds arbitrary payloads to the tensor decoder for a
// small shape: it must return an error or finite values, never panic, and
// its buffers must stay within what the shape sizes.
func FuzzTensorPayload(f *testing.F) {
	for _, sh := range []Shape{{24, 48}, {1, 1100}, {3, 5}} {
		x := tensorTestGrad(3, sh.Rows, sh.Cols)
		if sh.Rows >= 8 {
			for r := range sh.Rows { // repeated columns
				x[r*sh.Cols+40] = x[r*sh.Cols+3]
				x[r*sh.Cols+41] = x[r*sh.Cols+3]
			}
		}
		for _, bpv := range []float64{0.5, 2, 6} {
			p, err := newTensorEncoder(bpv).appendPayload(nil, x, sh)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(sh.Rows), uint16(sh.Cols), p)
		}
	}
	var d tensorDecoder
	f.Fuzz(func(t *testing.T, rows uint8, cols uint16, p []byte) {
		sh := Shape{int(rows%64) + 1, int(cols%2048) + 1}
		dst := make([]float32, sh.Len())
		if err := d.decodePayload(dst, sh, p); err != nil {
			return
		}
		for i, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("value %d decodes to %v", i, v)
			}
		}
		if cap(d.sym) > sh.Len()/2+tensorClasses+tensorBlock {
			t.Fatalf("symbol buffer of %d bytes for %d values", cap(d.sym), sh.Len())
		}
	})
}
