package video

import (
	"math"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/kern"
)

// Picture layout limits.
const (
	picAlign     = 16      // width and height are multiples of this
	picMinDim    = 32      // smallest width and frame height
	picMaxWidth  = 4096    // tensor rows wider than this are laid out flat
	picMaxHeight = 4096    // frames taller than this are split
	picMaxPixels = 1 << 22 // pixels per frame before a tall tensor is split
	maxQP        = 51
)

// picLayout says where tensor values go in the 8-bit pictures.
type picLayout struct {
	RowMode bool // tensor row r is picture row r; else values are laid out flat
	Stride  int  // distance in the picture buffer between tensor rows
	W       int  // picture width
	H       int  // picture rows holding data
	FrameH  int  // height of each frame
	Frames  int  // number of frames
}

func alignUp(x, a int) int { return (x + a - 1) / a * a }

// planLayout returns the deterministic picture layout of a tensor shape.
// Rows of 32 to 4096 values map to picture rows (the codec sees the
// tensor's own 2-D structure); other shapes are laid out flat in a
// near-square picture. Tall pictures are split into equal frames.
func planLayout(s gradcodec.Shape) picLayout {
	n := s.Len()
	var l picLayout
	if s.Cols >= picMinDim && s.Cols <= picMaxWidth {
		l.RowMode = true
		l.W = alignUp(s.Cols, picAlign)
		l.Stride = l.W
		l.H = s.Rows
	} else {
		w := alignUp(int(math.Ceil(math.Sqrt(float64(n)))), picAlign)
		l.W = min(max(w, picMinDim), 2048)
		l.Stride = s.Cols
		l.H = (n + l.W - 1) / l.W
	}
	h := alignUp(max(l.H, 1), picAlign)
	frames := max((l.W*h+picMaxPixels-1)/picMaxPixels, (h+picMaxHeight-1)/picMaxHeight, 1)
	l.FrameH = max(alignUp((l.H+frames-1)/frames, picAlign), picMinDim)
	l.Frames = (l.H + l.FrameH - 1) / l.FrameH
	return l
}

// quantize computes each scale group's scale mult·min(k·RMS, max|x|)
// (bfloat16, into scales) and writes the group's 8-bit levels into pix
// (W × FrameH·Frames) in the same visit, while the group's values are in
// cache: one pass over src in float32. When add is not nil the input is
// src + add instead, summed into add group by group in the same visit
// (error feedback: add holds the residual and is left holding the input).
// Rows are padded by repeating their last level, the picture by repeating
// its last row. When zmap is not nil (a scale covers several rows) it
// receives the zero-row bitmap. It returns −1, or the first scale group
// holding NaN or ±Inf (pix is then incomplete; with add, the groups up to
// that one are summed).
func quantize(pix []byte, scales []uint16, zmap []byte, src, add []float32, s gradcodec.Shape, l picLayout, k, mult float32) (bad int) {
	g := gradcodec.ScaleGroupRows(s)
	clear(zmap)
	for gi := range scales {
		r0 := gi * g
		r1 := min(r0+g, s.Rows)
		var h uint16
		var ok bool
		if add != nil {
			grp := add[r0*s.Cols : r1*s.Cols]
			ss, mb := kern.AddSumSqMaxAbs(grp, src[r0*s.Cols:r1*s.Cols])
			h, ok = gradcodec.ScaleFromStats(ss, mb, len(grp), k, mult)
		} else {
			h, ok = gradcodec.GroupScale(src[r0*s.Cols:r1*s.Cols], k, mult)
		}
		if !ok {
			return gi // NaN or Inf somewhere in the group
		}
		scales[gi] = h
		var inv float32
		if h != 0 {
			inv = 127 / gradcodec.FromBF16(h)
		}
		in := src
		if add != nil {
			in = add
		}
		for r := r0; r < r1; r++ {
			row := in[r*s.Cols : (r+1)*s.Cols]
			off := r * l.Stride
			out := pix[off : off+s.Cols]
			out = out[:len(row)]
			zero := h == 0
			if zmap != nil && gradcodec.IsZero(row) {
				zero = true
				zmap[r/8] |= 1 << (r % 8)
			}
			if zero {
				for i := range out {
					out[i] = 128
				}
			} else {
				kern.QuantU8(out, row, inv)
			}
			if l.RowMode {
				last := out[len(out)-1]
				pad := pix[off+s.Cols : off+l.W]
				for i := range pad {
					pad[i] = last
				}
			}
		}
	}
	// Finish the last partial row of a flat layout, then repeat the last
	// row down to the end of the last frame.
	used := l.H * l.W
	if !l.RowMode {
		n := s.Len()
		last := pix[n-1]
		for i := n; i < used; i++ {
			pix[i] = last
		}
	}
	lastRow := pix[used-l.W : used]
	for off := used; off < l.W*l.FrameH*l.Frames; off += l.W {
		copy(pix[off:off+l.W], lastRow)
	}
	return -1
}

// refitRecon replaces each scale by the least-squares one, 127·Σx·q/Σq²
// over the group's decoded levels q (pix, what every decoder yields; tensor
// row r at pix[r*stride:], stride l.Stride for a flat layout), and
// writes into recon (when not nil) the values every decoder will produce
// with the new scales, and into residual (when not nil) src minus those
// values, group by group while the group is in cache (with recon nil, the
// residual alone: kern.ResidualU8, the same bits). scales
// holds the encoded scales as bfloat16 and is updated in place; rows marked
// in zmap are skipped and decode as zeros. A group with scale 0, or whose
// levels are all 128, keeps its scale; one whose levels anti-correlate with
// the input gets scale 0 (zeros beat them).
func refitRecon(recon, residual []float32, scales []uint16, zmap []byte, pix []byte, stride int, src []float32, s gradcodec.Shape, l picLayout) {
	g := gradcodec.ScaleGroupRows(s)
	zeroRow := func(r int) bool { return len(zmap) > 0 && zmap[r/8]&(1<<(r%8)) != 0 }
	levels := func(r int) []byte { return pix[r*stride : r*stride+s.Cols] }
	// A reconstruction far larger than the cache is written with
	// non-temporal stores, as readRows writes a decoded tensor (see
	// streamMinBytes): the same values, without first reading every line
	// it overwrites.
	stream := recon != nil && 4*s.Len() >= streamMinBytes
	if stream {
		defer kern.StoreFence()
	}
	// finish refits group gi from Σx·q and Σq² and writes its recon and
	// residual.
	finish := func(gi int, dot, qq float64) {
		r0 := gi * g
		r1 := min(r0+g, s.Rows)
		old := scales[gi]
		var sc uint16
		switch {
		case old == 0 || qq == 0:
			sc = old // nothing to fit: the group decodes as zeros either way
		case dot > 0:
			sc = gradcodec.ToBF16(float32(127 * dot / qq))
			if v := gradcodec.FromBF16(sc); v > math.MaxFloat32 || v == 0 {
				sc = old
			}
		}
		scales[gi] = sc
		if recon == nil && residual == nil {
			return
		}
		m := gradcodec.FromBF16(sc) / 127
		for r := r0; r < r1; r++ {
			x := src[r*s.Cols : (r+1)*s.Cols]
			if recon == nil { // the residual alone (a reduce-scatter hop)
				res := residual[r*s.Cols : (r+1)*s.Cols]
				if sc == 0 || zeroRow(r) {
					copy(res, x)
				} else {
					kern.ResidualU8(res, levels(r), x, m)
				}
				continue
			}
			row := recon[r*s.Cols : (r+1)*s.Cols]
			switch {
			case sc == 0 || zeroRow(r):
				clear(row)
				if residual != nil {
					copy(residual[r*s.Cols:(r+1)*s.Cols], x)
				}
			case residual != nil && stream:
				kern.DequantU8NT(row, levels(r), m)
				kern.ResidualU8(residual[r*s.Cols:(r+1)*s.Cols], levels(r), x, m) // DequantResidual's bits
			case residual != nil:
				kern.DequantResidual(row, residual[r*s.Cols:(r+1)*s.Cols], levels(r), x, m)
			case stream:
				kern.DequantU8NT(row, levels(r), m)
			default:
				kern.DequantU8(row, levels(r), m)
			}
		}
	}
	gi := 0
	if g == 1 && len(zmap) == 0 && s.Cols <= 1<<16 {
		// One row per group: two groups at a time, their dot products'
		// dependency chains interleaved (each summed as DotLevels does).
		// The pair is a row of the first half and its partner in the
		// second, so that each half is read as one sequential stream: two
		// neighbouring rows read side by side restart the hardware
		// prefetchers at every pair (refit of an h264 frame, measured in
		// place: 2048×2048 1.8 → 1.3 ms, 512×512 0.09 → 0.05 ms). Each
		// group is computed as before, so the order changes no result.
		half := len(scales) / 2
		for i := 0; i < half; i++ {
			j := i + half
			x0, x1 := src[i*s.Cols:(i+1)*s.Cols], src[j*s.Cols:(j+1)*s.Cols]
			d0, q0, d1, q1 := kern.DotLevels2(x0, levels(i), x1, levels(j))
			finish(i, float64(d0), float64(q0))
			finish(j, float64(d1), float64(q1))
		}
		gi = 2 * half // an odd last group is left to the loop below
	}
	for ; gi < len(scales); gi++ {
		r0 := gi * g
		r1 := min(r0+g, s.Rows)
		var dot, qq float64
		for r := r0; r < r1; r++ {
			if zeroRow(r) {
				continue
			}
			row := src[r*s.Cols : (r+1)*s.Cols]
			in := levels(r)[:len(row)]
			for len(row) > 0 { // blocks of 64Ki values keep Σq² in int32
				k := min(len(row), 1<<16)
				d, q := kern.DotLevels(row[:k], in[:k])
				dot += float64(d)
				qq += float64(q)
				row, in = row[k:], in[k:]
			}
		}
		finish(gi, dot, qq)
	}
}

// streamMinBytes is the decoded tensor size from which readRows writes
// with non-temporal stores (kern.DequantU8NT): about half the last-level
// cache of the machines measured (AMD EPYC, 32 MiB L3), where the output
// would only evict the decoder's working set and cost a read of every
// line it overwrites. Measured at 2048×2048 (16 MiB), h264: dequantisation
// 1.5 → 1.15 ms with the output out of cache.
const streamMinBytes = 16 << 20

// readRows dequantizes tensor rows r0 to r1 from pix (row r at
// pix[(r−r0)·stride:]) into dst.
func readRows(dst []float32, pix []byte, stride, r0, r1 int, s gradcodec.Shape, scales []float32) {
	g := gradcodec.ScaleGroupRows(s)
	deq := kern.DequantU8
	if 4*s.Len() >= streamMinBytes {
		deq = kern.DequantU8NT
		defer kern.StoreFence()
	}
	for r := r0; r < r1; r++ {
		row := dst[r*s.Cols : (r+1)*s.Cols]
		sc := scales[r/g]
		if sc == 0 {
			clear(row)
			continue
		}
		off := (r - r0) * stride
		deq(row, pix[off:off+s.Cols], sc/127)
	}
}
