package collective

import (
	"context"
	"errors"
	"math"
	"math/rand"
	"reflect"
	"testing"
)

func testTensors(r int, seed int64) []Tensor {
	shapes := []struct {
		name       string
		rows, cols int
	}{
		{"w1", 64, 100}, {"b1", 1, 64}, {"w2", 32, 64}, {"b2", 32, 1}, {"w3", 10, 32}, {"b3", 1, 10},
	}
	ts := make([]Tensor, len(shapes))
	for i, s := range shapes {
		ts[i] = Tensor{Name: s.name, Rows: s.rows, Cols: s.cols, Grad: rankData(seed*100+int64(i), r, s.rows*s.cols)}
	}
	return ts
}

func TestBucketerPlanReverseOrder(t *testing.T) {
	c := singleRank(t)
	// 4*(32*64) = 8192 bytes: w2 fills a bucket exactly; b3+w3+b2 fit together.
	b, err := NewBucketer(c, testTensors(0, 1), BucketOptions{BucketBytes: 8192, Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for _, bk := range b.Buckets() {
		got = append(got, bk.Tensors)
	}
	want := [][]string{{"b3", "w3", "b2"}, {"w2"}, {"b1"}, {"w1"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("buckets %v, want %v", got, want)
	}
	if s := b.Buckets()[1].Stream; s != "m/bucket1" {
		t.Fatalf("stream %q", s)
	}
	if err := b.MarkReady(9); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("MarkReady(9): %v", err)
	}
	if err := b.MarkReady(0); err != nil {
		t.Fatal(err)
	}
	if err := b.MarkReady(0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("MarkReady twice: %v", err)
	}
	if _, err := NewBucketer(c, []Tensor{{Name: "x", Rows: 2, Cols: 2, Grad: make([]float32, 3)}}, BucketOptions{}); !errors.Is(err, ErrShapeMismatch) && !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad Grad length: %v", err)
	}
}

func TestBucketerAveragesAcrossRanks(t *testing.T) {
	ctx := context.Background()
	const size = 4
	comms, _ := memWorld(t, size, func(c *Config) { c.Codec = "raw"; c.BucketBytes = 8192 })
	const steps = 3
	grads := make([][]Tensor, size)
	buckets := make([]*Bucketer, size)
	for r, c := range comms {
		grads[r] = testTensors(r, 0)
		var err error
		if buckets[r], err = NewBucketer(c, grads[r], BucketOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for step := int64(0); step < steps; step++ {
		noErrors(t, each(comms, func(r int, c *Comm) error {
			fresh := testTensors(r, step)
			for i := range grads[r] {
				copy(grads[r][i].Grad, fresh[i].Grad)
			}
			// Every rank marks its tensors in a different order; buckets
			// still start in the same order everywhere. The last step
			// marks nothing: Wait starts everything.
			if step < steps-1 {
				order := rand.New(rand.NewSource(int64(r) + 10*step)).Perm(len(grads[r]))
				for _, i := range order {
					if err := buckets[r].MarkReady(i); err != nil {
						return err
					}
				}
			}
			st, err := buckets[r].Wait(ctx)
			if err == nil && st.Calls != 4 {
				t.Errorf("rank %d: step stats %+v, want 4 calls", r, st)
			}
			return err
		}))
		for i := range grads[0] {
			n := len(grads[0][i].Grad)
			want := make([]float64, n)
			for r := 0; r < size; r++ {
				for k, v := range testTensors(r, step)[i].Grad {
					want[k] += float64(v) / size
				}
			}
			for r := 0; r < size; r++ {
				for k := range want {
					if math.Abs(float64(grads[r][i].Grad[k])-want[k]) > 1e-5 {
						t.Fatalf("step %d rank %d tensor %s[%d] = %v, want %v", step, r, grads[r][i].Name, k, grads[r][i].Grad[k], want[k])
					}
				}
			}
		}
	}
}
