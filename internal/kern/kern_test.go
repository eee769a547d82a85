package kern

import (
	"math"
	"math/rand/v2"
	"testing"
)

// values returns n test values: normal-ish magnitudes over many decades,
// with zeros, halves' subnormals, values beyond fp16's range and, when
// special, NaN and ±Inf.
func values(rng *rand.Rand, n int, special bool) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch rng.IntN(10) {
		case 0:
			x[i] = 0
		case 1:
			x[i] = float32(rng.NormFloat64() * 1e-6) // fp16 subnormal
		case 2:
			x[i] = float32(rng.NormFloat64() * 1e5) // beyond fp16
		case 3:
			x[i] = math.Float32frombits(rng.Uint32()) // any bits
			if !special && math.Float32bits(x[i])&0x7f800000 == 0x7f800000 {
				x[i] = 1
			}
		default:
			x[i] = float32(rng.NormFloat64() * math.Pow(10, rng.Float64()*6-4))
		}
	}
	return x
}

// TestKernelsMatchGo runs every kernel with and without the assembly over
// lengths around the block size and checks the results agree bit for bit
// (sums to a relative 1e-5).
func TestKernelsMatchGo(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2 kernels on this machine")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 1000} {
		for _, special := range []bool{false, true} {
			x := values(rng, n, special)
			r := values(rng, n, false)
			q := make([]byte, n)
			for i := range q {
				q[i] = byte(rng.IntN(256))
			}
			inv := float32(rng.Float64() * 1000)
			type res struct {
				ss, dot       float32
				mx            uint32
				qq            int32
				u8, i8        []byte
				deq, dei, add []float32
				add2          []float32
				dr1, dr2      []float32
				res, resIn    []float32
				sub           []float32
				fin           bool
				h16, b16      []uint16
				fok, bok      bool
				fdec, bdec    []float32
				fdok, bdok    bool
			}
			run := func() res {
				var o res
				o.ss, o.mx = SumSqMaxAbs(x)
				o.dot, o.qq = DotLevels(x, q)
				o.u8 = make([]byte, n)
				QuantU8(o.u8, r, inv)
				o.i8 = make([]byte, n)
				QuantI8(o.i8, r, inv)
				o.deq = make([]float32, n)
				DequantU8(o.deq, q, 0.37)
				o.dei = make([]float32, n)
				DequantI8(o.dei, q, 0.37)
				o.add = append([]float32(nil), x...)
				AddTo(o.add, r)
				o.dr1, o.dr2 = make([]float32, n), make([]float32, n)
				DequantResidual(o.dr1, o.dr2, q, x, 0.37)
				o.res = make([]float32, n)
				ResidualU8(o.res, q, x, 0.37)
				o.resIn = append([]float32(nil), x...)
				ResidualU8(o.resIn, q, o.resIn, 0.37) // in place
				o.add2 = make([]float32, n)
				AddTo2(o.add2, x, r)
				o.sub = make([]float32, n)
				SubTo(o.sub, x, r)
				o.fin = AllFinite(x)
				o.h16 = make([]uint16, n)
				o.fok = EncodeFP16(o.h16, x)
				o.b16 = make([]uint16, n)
				o.bok = EncodeBF16(o.b16, x)
				hs := make([]uint16, n)
				for i := range hs {
					hs[i] = uint16(rng.Uint32())
				}
				o.fdec = make([]float32, n)
				o.fdok = DecodeFP16(o.fdec, hs)
				o.bdec = make([]float32, n)
				o.bdok = DecodeBF16(o.bdec, hs)
				return o
			}
			seed := rng.Uint64()
			rng = rand.New(rand.NewPCG(seed, 3))
			useAVX2 = true
			a := run()
			rng = rand.New(rand.NewPCG(seed, 3))
			useAVX2 = false
			g := run()
			useAVX2 = true
			near := func(what string, p, q float32) {
				if p != q && !(p != p && q != q) && math.Abs(float64(p-q)) > 1e-5*math.Abs(float64(q))+1e-30 && !math.IsInf(float64(q), 0) {
					t.Errorf("n=%d special=%v %s: asm %v, Go %v", n, special, what, p, q)
				}
			}
			near("SumSq", a.ss, g.ss)
			near("Dot", a.dot, g.dot)
			if a.mx != g.mx || a.qq != g.qq || a.fin != g.fin || a.fok != g.fok || a.bok != g.bok || a.fdok != g.fdok || a.bdok != g.bdok {
				t.Fatalf("n=%d special=%v: max %x/%x qq %d/%d finite %v/%v fp16 %v/%v bf16 %v/%v dec %v/%v %v/%v", n, special,
					a.mx, g.mx, a.qq, g.qq, a.fin, g.fin, a.fok, g.fok, a.bok, g.bok, a.fdok, g.fdok, a.bdok, g.bdok)
			}
			for i := 0; i < n; i++ {
				// Non-finite inputs are rejected by the encoders; their
				// halves may differ (the sign of a saturated NaN).
				finite := math.Float32bits(x[i])&0x7f800000 != 0x7f800000
				if a.u8[i] != g.u8[i] || a.i8[i] != g.i8[i] || (finite && a.h16[i] != g.h16[i]) || a.b16[i] != g.b16[i] {
					t.Fatalf("n=%d special=%v value %d (%v, %v): u8 %d/%d i8 %d/%d fp16 %#x/%#x bf16 %#x/%#x", n, special, i, x[i], r[i],
						a.u8[i], g.u8[i], a.i8[i], g.i8[i], a.h16[i], g.h16[i], a.b16[i], g.b16[i])
				}
				for _, p := range [][2]float32{{a.deq[i], g.deq[i]}, {a.dei[i], g.dei[i]}, {a.add[i], g.add[i]}, {a.add2[i], g.add2[i]}, {a.dr1[i], g.dr1[i]}, {a.dr2[i], g.dr2[i]}, {a.res[i], g.res[i]}, {a.resIn[i], g.resIn[i]}, {a.res[i], g.dr2[i]}, {a.sub[i], g.sub[i]}, {a.fdec[i], g.fdec[i]}, {a.bdec[i], g.bdec[i]}} {
					if math.Float32bits(p[0]) != math.Float32bits(p[1]) && !(p[0] != p[0] && p[1] != p[1]) {
						t.Fatalf("n=%d special=%v value %d: asm %v, Go %v", n, special, i, p[0], p[1])
					}
				}
			}
		}
	}
}

// TestQuantDZ checks QuantDZ, with and without the assembly, against
// sign(x)·floor(|x|·inv + θ) computed on |x|, and its range report.
func TestQuantDZ(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const theta = 0.4
	has := useAVX2
	defer func() { useAVX2 = has }()
	for _, n := range []int{0, 1, 7, 8, 9, 17, 64, 1000} {
		for _, special := range []bool{false, true} {
			for _, inv := range []float32{0.5, 3, 100, 1e4} {
				x := values(rng, n, special)
				if !special && rng.IntN(2) == 0 {
					for i := range x { // mostly in range
						x[i] = float32(rng.NormFloat64()) * 20 / inv
					}
				}
				wantOK := true
				want := make([]byte, n)
				for i, v := range x {
					a := float32(math.Abs(float64(v)))*inv + theta
					if !(a < 128) {
						wantOK = false
						continue
					}
					q := int32(a)
					if v < 0 {
						q = -q
					}
					want[i] = byte(q)
				}
				for _, asm := range []bool{false, true} {
					if asm && !has {
						continue
					}
					useAVX2 = asm
					out := make([]byte, n)
					ok := QuantDZ(out, x, inv, theta)
					if ok != wantOK {
						t.Fatalf("n=%d special=%v inv=%v asm=%v: ok %v, want %v", n, special, inv, asm, ok, wantOK)
					}
					if ok {
						for i := range out {
							if out[i] != want[i] {
								t.Fatalf("n=%d inv=%v asm=%v value %d (%v): %d, want %d", n, inv, asm, i, x[i], int8(out[i]), int8(want[i]))
							}
						}
					}
				}
			}
		}
	}
}

// TestDequantU8NTMatches checks DequantU8NT against DequantU8 bit for bit
// over lengths around its blocks of 32 and every alignment of dst (the
// streaming path needs 32-byte alignment and goes plain up to it).
func TestDequantU8NTMatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{0, 1, 7, 8, 31, 32, 63, 64, 65, 95, 96, 100, 127, 128, 1000, 2048, 4099} {
		for off := 0; off < 8; off++ {
			q := make([]byte, n)
			for i := range q {
				q[i] = byte(rng.IntN(256))
			}
			m := float32(rng.NormFloat64())
			want := make([]float32, n)
			DequantU8(want, q, m)
			got := make([]float32, n+off)[off:]
			DequantU8NT(got, q, m)
			StoreFence()
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n=%d off=%d: [%d] = %v, want %v", n, off, i, got[i], want[i])
				}
			}
		}
	}
}
