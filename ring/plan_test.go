package ring

import (
	"fmt"
	"testing"

	"github.com/vccl/vccl/gradcodec"
)

// checkPlan verifies that a plan covers [0, n) in order, that every piece
// lies inside one tensor and either is whole rows of it or lies within one
// row, and returns the chunk boundaries.
func checkPlan(t *testing.T, p *plan, n, size int) []int {
	t.Helper()
	if len(p.chunks) != size {
		t.Fatalf("%d chunks, want %d", len(p.chunks), size)
	}
	var bounds []int
	off := 0
	for c, ch := range p.chunks {
		bounds = append(bounds, off)
		if len(ch) == 0 {
			t.Fatalf("chunk %d has no sub-chunk", c)
		}
		for k, s := range ch {
			if s.off != off {
				t.Fatalf("chunk %d sub %d starts at %d, want %d", c, k, s.off, off)
			}
			sum := 0
			for _, pc := range s.pieces {
				ti := -1
				for i, tn := range p.tensors {
					if off+sum >= tn.off && off+sum < tn.end() {
						ti = i
					}
				}
				if ti < 0 {
					t.Fatalf("piece at %d lies in no tensor", off+sum)
				}
				tn := p.tensors[ti]
				local := off + sum - tn.off
				switch {
				case pc.Cols == tn.cols && local%tn.cols == 0:
					// whole rows
				case pc.Rows == 1 && local/tn.cols == (local+pc.Cols-1)/tn.cols:
					// within one row
				default:
					t.Fatalf("chunk %d sub %d: piece %dx%d at %d does not follow tensor %dx%d", c, k, pc.Rows, pc.Cols, off+sum, tn.rows, tn.cols)
				}
				if off+sum+pc.Len() > tn.end() {
					t.Fatalf("piece crosses the end of tensor %d", ti)
				}
				sum += pc.Len()
			}
			if sum != s.n {
				t.Fatalf("chunk %d sub %d: pieces cover %d of %d values", c, k, sum, s.n)
			}
			off += s.n
		}
	}
	if off != n {
		t.Fatalf("plan covers %d of %d values", off, n)
	}
	return bounds
}

func TestPlanFollowsRows(t *testing.T) {
	layout := []gradcodec.Shape{{Rows: 300, Cols: 64}, {Rows: 1, Cols: 64}, {Rows: 100, Cols: 10}, {Rows: 0, Cols: 5}, {Rows: 3, Cols: 7}}
	n := 0
	for _, s := range layout {
		n += s.Len()
	}
	for size := 1; size <= 8; size++ {
		for _, sub := range []int{0, 50, 1000, 5000} {
			t.Run(fmt.Sprintf("size%d/sub%d", size, sub), func(t *testing.T) {
				p, err := newPlan(n, layout, size, sub)
				if err != nil {
					t.Fatal(err)
				}
				bounds := checkPlan(t, p, n, size)
				// With rows of 64 values and chunks of thousands, every cut
				// inside the big tensor falls on a row boundary.
				for _, b := range bounds {
					if b < 300*64 && b%64 != 0 {
						t.Fatalf("chunk boundary %d splits a row of the 300x64 tensor", b)
					}
				}
			})
		}
	}
}

func TestPlanEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		n, size, sub int
		layout       []gradcodec.Shape
	}{
		{0, 4, 0, nil},
		{3, 8, 0, nil},
		{1, 2, 1, nil},
		{1000003, 7, 1 << 16, nil},
		{3 << 20, 4, 0, []gradcodec.Shape{{Rows: 3, Cols: 1 << 20}}}, // too few rows: cut mid-row
		{10, 3, 2, []gradcodec.Shape{{Rows: 10, Cols: 1}}},
	} {
		p, err := newPlan(tc.n, tc.layout, tc.size, tc.sub)
		if err != nil {
			t.Fatal(err)
		}
		checkPlan(t, p, tc.n, tc.size)
	}
	for _, tc := range []struct {
		n      int
		layout []gradcodec.Shape
	}{
		{10, []gradcodec.Shape{{Rows: 3, Cols: 3}}},
		{10, []gradcodec.Shape{{Rows: -1, Cols: -10}}},
	} {
		if _, err := newPlan(tc.n, tc.layout, 2, 0); err == nil {
			t.Fatalf("layout %v for %d values: no error", tc.layout, tc.n)
		}
	}
}

func TestTokenRoundTrip(t *testing.T) {
	re := &RemoteError{Op: 9, Origin: 3, Code: CodePeerLost, Lost: 2, Msg: "gone"}
	for _, fatal := range []bool{false, true} {
		m := Message{Op: 9, Kind: KindAbort, Payload: encodeAbort(re, fatal)}
		tk, err := decodeToken(m, 5)
		if err != nil || tk.fatal != fatal || isFatalAbort(m) != fatal || tk.origin != 3 || *tk.err != *re {
			t.Fatalf("abort round trip: %+v %v", tk, err)
		}
	}
	tk, err := decodeToken(Message{Kind: KindDone, Payload: encodeDone(4, true)}, 5)
	if err != nil || tk.origin != 4 || !tk.stopped {
		t.Fatalf("done round trip: %+v %v", tk, err)
	}
	for _, m := range []Message{
		{Kind: KindDone, Payload: encodeDone(5, false)},
		{Kind: KindDone},
		{Kind: KindAbort, Payload: []byte{1}},
		{Kind: KindAbort, Payload: encodeAbort(&RemoteError{Origin: 7}, false)},
		{Kind: KindBytes},
	} {
		if _, err := decodeToken(m, 5); err == nil {
			t.Fatalf("malformed %v accepted", m)
		}
	}
}
