package ring

import (
	"fmt"
	"sort"

	"github.com/vccl/vccl/gradcodec"
)

// DefaultSubChunkValues is the pipelining granularity used when
// Options.SubChunkValues is 0: 256 Ki values (1 MiB of float32).
const DefaultSubChunkValues = 1 << 18

// tensor is one Layout entry placed in the flat buffer.
type tensor struct{ off, rows, cols int }

func (t tensor) end() int { return t.off + t.rows*t.cols }

// segment is one sub-chunk: values [off, off+n) of the buffer, made of
// pieces that each keep a 2-D shape of the tensor they come from.
type segment struct {
	off, n int
	pieces []gradcodec.Shape
}

// plan splits a buffer of n values into size ring chunks, each into one or
// more sub-chunks. Every rank computes the same plan from the same inputs.
type plan struct {
	n       int
	tensors []tensor
	chunks  [][]segment // chunks[c][k]; every chunk has at least one (maybe empty) sub-chunk
}

// newTensors places layout in a buffer of n values; nil layout is one 1-D
// tensor (a single row).
func newTensors(n int, layout []gradcodec.Shape) ([]tensor, error) {
	if layout == nil {
		if n == 0 {
			return nil, nil
		}
		return []tensor{{0, 1, n}}, nil
	}
	var ts []tensor
	off := 0
	for i, s := range layout {
		if s.Rows < 0 || s.Cols < 0 {
			return nil, fmt.Errorf("ring: layout tensor %d has negative shape %dx%d", i, s.Rows, s.Cols)
		}
		if s.Len() == 0 {
			continue
		}
		ts = append(ts, tensor{off, s.Rows, s.Cols})
		off += s.Len()
	}
	if off != n {
		return nil, fmt.Errorf("ring: layout covers %d values but the buffer has %d", off, n)
	}
	return ts, nil
}

// newPlan builds the chunking of n values laid out as layout for a ring of
// size ranks with sub-chunks of about sub values.
func newPlan(n int, layout []gradcodec.Shape, size, sub int) (*plan, error) {
	return newPlanChunks(n, layout, size, sub, false)
}

// newPlanChunks is newPlan; with equal, ring chunk c is exactly values
// [c*n/size, (c+1)*n/size) (ReduceScatter's output slices), and only the
// sub-chunk cuts follow rows.
func newPlanChunks(n int, layout []gradcodec.Shape, size, sub int, equal bool) (*plan, error) {
	ts, err := newTensors(n, layout)
	if err != nil {
		return nil, err
	}
	if sub <= 0 {
		sub = DefaultSubChunkValues
	}
	p := &plan{n: n, tensors: ts, chunks: make([][]segment, size)}
	bounds := p.split(0, n, size)
	if equal {
		for c := range bounds {
			bounds[c] = c * (n / size)
		}
		bounds[size] = n
	}
	for c := 0; c < size; c++ {
		a, b := bounds[c], bounds[c+1]
		k := (b - a + sub - 1) / sub
		if k < 1 {
			k = 1
		}
		sb := p.split(a, b, k)
		for j := 0; j < k; j++ {
			x, y := sb[j], sb[j+1]
			p.chunks[c] = append(p.chunks[c], segment{off: x, n: y - x, pieces: p.pieces(x, y)})
		}
	}
	return p, nil
}

// split cuts [a, b) into parts ranges of near-equal length, moving each cut
// to the nearest row boundary when that is within an eighth of a part.
// It returns parts+1 non-decreasing boundaries from a to b.
func (p *plan) split(a, b, parts int) []int {
	bs := make([]int, parts+1)
	bs[0], bs[parts] = a, b
	m := b - a
	tol := m / parts / 8
	for i := 1; i < parts; i++ {
		x := a + int(int64(i)*int64(m)/int64(parts))
		x = p.snap(x, tol)
		if x < bs[i-1] {
			x = bs[i-1]
		}
		if x > b {
			x = b
		}
		bs[i] = x
	}
	return bs
}

// snap moves x to the nearest row boundary within tol, else returns x.
func (p *plan) snap(x, tol int) int {
	i := sort.Search(len(p.tensors), func(i int) bool { return p.tensors[i].end() > x })
	if i == len(p.tensors) {
		return x
	}
	t := p.tensors[i]
	if x <= t.off {
		return x
	}
	down := t.off + (x-t.off)/t.cols*t.cols
	up := down + t.cols
	if x == down {
		return x
	}
	best, d := down, x-down
	if up-x < d {
		best, d = up, up-x
	}
	if d <= tol {
		return best
	}
	return x
}

// pieces returns the 2-D pieces covering [x, y): whole rows of a tensor
// keep its shape; a partial row becomes a 1 × k piece.
func (p *plan) pieces(x, y int) []gradcodec.Shape {
	var out []gradcodec.Shape
	i := sort.Search(len(p.tensors), func(i int) bool { return p.tensors[i].end() > x })
	for ; i < len(p.tensors) && p.tensors[i].off < y; i++ {
		t := p.tensors[i]
		u, v := max(x, t.off), min(y, t.end())
		if u >= v {
			continue
		}
		if r := (u - t.off) % t.cols; r != 0 {
			e := min(v, u+t.cols-r)
			out = append(out, gradcodec.Shape{Rows: 1, Cols: e - u})
			u = e
		}
		if rows := (v - u) / t.cols; rows > 0 {
			out = append(out, gradcodec.Shape{Rows: rows, Cols: t.cols})
			u += rows * t.cols
		}
		if u < v {
			out = append(out, gradcodec.Shape{Rows: 1, Cols: v - u})
		}
	}
	return out
}
