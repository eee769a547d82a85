package video

import (
	"math"

	"github.com/vccl/vccl/gradcodec"
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

// fillPicture quantizes src into pix (W × FrameH·Frames) using the scales
// and pads by replicating the last column and row.
func fillPicture(pix []byte, src []float32, s gradcodec.Shape, l picLayout, scales []uint16) {
	g := gradcodec.ScaleGroupRows(s)
	for r := 0; r < s.Rows; r++ {
		row := src[r*s.Cols : (r+1)*s.Cols]
		off := r * l.Stride
		out := pix[off : off+s.Cols]
		sc := gradcodec.FromBF16(scales[r/g])
		if sc == 0 || (g > 1 && gradcodec.IsZero(row)) {
			for i := range out {
				out[i] = 128
			}
		} else {
			inv := 127 / sc
			for i, v := range row {
				// Round to nearest level in [1, 255] (128 is zero).
				f := min(max(v*inv+128.5, 1), 255.5)
				out[i] = byte(int32(f))
			}
		}
		if l.RowMode {
			last := out[len(out)-1]
			pad := pix[off+s.Cols : off+l.W]
			for i := range pad {
				pad[i] = last
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
}

// readPicture dequantizes pix into dst.
func readPicture(dst []float32, pix []byte, s gradcodec.Shape, l picLayout, scales []float32) {
	g := gradcodec.ScaleGroupRows(s)
	for r := 0; r < s.Rows; r++ {
		row := dst[r*s.Cols : (r+1)*s.Cols]
		sc := scales[r/g]
		if sc == 0 {
			clear(row)
			continue
		}
		m := sc / 127
		in := pix[r*l.Stride : r*l.Stride+s.Cols]
		for i, p := range in {
			row[i] = float32(int32(p)-128) * m
		}
	}
}
