package ring_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"testing"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// reduceScatter runs one ReduceScatter on every rank over inputs (modified
// in place) and returns the per-rank errors.
func reduceScatter(t *testing.T, net *ringtest.Network, inputs [][]float32, mk func(rank int) ring.Options) []error {
	t.Helper()
	return runRanks(t, net.Size(), func(ctx context.Context, rank int) error {
		_, err := net.Ring(rank).ReduceScatter(ctx, inputs[rank], mk(rank))
		return err
	})
}

// ownSlice returns rank r's output slice of a reduce-scatter of x.
func ownSlice[T any](x []T, r, size int) []T {
	n := len(x) / size
	return x[r*n : (r+1)*n]
}

// TestReduceScatterRawExact: with the exact codec every rank's slice is the
// float32 sum (or mean) of that slice over all ranks, for world sizes 1-8.
func TestReduceScatterRawExact(t *testing.T) {
	for size := 1; size <= 8; size++ {
		for _, per := range []int{0, 1, 3, 100, 1001} {
			for _, avg := range []bool{false, true} {
				t.Run(fmt.Sprintf("size%d/n%d/avg%v", size, per, avg), func(t *testing.T) {
					net := ringtest.NewNetwork(size)
					in := inputsFor(size, per*size, uint64(size*100+per))
					ref := reference(in, avg)
					errs := reduceScatter(t, net, in, func(int) ring.Options {
						return ring.Options{Op: 1, Average: avg, Codec: &ringtest.RawCodec{}, SubChunkValues: 64}
					})
					noErrors(t, errs)
					for r := range size {
						got, want := ownSlice(in[r], r, size), ownSlice(ref, r, size)
						for i := range got {
							if d := math.Abs(float64(got[i]) - want[i]); d > float64(size)*1e-6*(1+math.Abs(want[i])) {
								t.Fatalf("rank %d value %d = %v, want %v", r, i, got[i], want[i])
							}
						}
					}
				})
			}
		}
	}
}

// TestReduceScatterLossy: with the lossy codec (every hop re-encodes) the
// slices are within the codec's error of the exact mean, for world sizes
// 2-8, with a layout whose rows the sub-chunks follow.
func TestReduceScatterLossy(t *testing.T) {
	for size := 2; size <= 8; size++ {
		t.Run(fmt.Sprintf("size%d", size), func(t *testing.T) {
			net := ringtest.NewNetwork(size)
			rows, cols := 40*size, 73
			in := inputsFor(size, rows*cols, uint64(size))
			ref := reference(in, true)
			errs := reduceScatter(t, net, in, func(int) ring.Options {
				return ring.Options{Op: 3, Average: true, Codec: &ringtest.QuantCodec{}, SubChunkValues: 500,
					Layout: []gradcodec.Shape{{Rows: rows, Cols: cols}}}
			})
			noErrors(t, errs)
			for r := range size {
				if e := metric.NMSE(ownSlice(in[r], r, size), ownSlice(ref, r, size)); e > 1e-3 || e == 0 {
					t.Fatalf("rank %d: NMSE %g, want (0, 1e-3]", r, e)
				}
			}
		})
	}
}

// TestReduceScatterGradCodec runs the real container codec (int8, pure Go)
// with error feedback.
func TestReduceScatterGradCodec(t *testing.T) {
	const size, rows, cols = 4, 128, 96
	net := ringtest.NewNetwork(size)
	codecs := make([]*ring.GradCodec, size)
	for r := range codecs {
		codecs[r] = newGradCodec(t, "int8", true)
	}
	in := make([][]float32, size)
	for r := range in {
		in[r] = smooth(uint64(r), rows, cols)
	}
	ref := reference(in, false)
	errs := reduceScatter(t, net, in, func(r int) ring.Options {
		return ring.Options{Op: 1, Codec: codecs[r], Stream: "w", Layout: []gradcodec.Shape{{Rows: rows, Cols: cols}}}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for r := range size {
		if e := metric.NMSE(ownSlice(in[r], r, size), ownSlice(ref, r, size)); e > 1e-3 {
			t.Fatalf("rank %d: NMSE %g", r, e)
		}
	}
}

// TestReduceScatterFaults: the faults of AllReduce end a ReduceScatter on
// every rank with the same error naming the rank where it arose.
func TestReduceScatterFaults(t *testing.T) {
	base := runtime.NumGoroutine()
	const size, per = 4, 500
	rawRS := func(op uint64) func(int) ring.Options {
		return func(int) ring.Options { return ring.Options{Op: op, Codec: &ringtest.RawCodec{}, SubChunkValues: 128} }
	}
	t.Run("corrupt", func(t *testing.T) {
		net := ringtest.NewNetwork(size)
		net.AddFault(ringtest.Fault{From: 1, Kind: ring.KindReduceScatter, Nth: 3, Action: ringtest.Corrupt})
		sameError(t, reduceScatter(t, net, inputsFor(size, size*per, 1), rawRS(1)), gradcodec.ErrBadFrame, "failed on rank 2")
		// Not fatal: the ring is usable again.
		in := inputsFor(size, size*per, 2)
		if err := errors.Join(reduceScatter(t, net, in, rawRS(2))...); err != nil {
			t.Fatal(err)
		}
	})
	for _, where := range []string{"own", "sent"} {
		t.Run("nan-"+where, func(t *testing.T) {
			net := ringtest.NewNetwork(size)
			in := inputsFor(size, size*per, 3)
			// Rank 2 never encodes its own slice: the NaN there must still
			// be found.
			i := 2*per + 7
			if where == "sent" {
				i = 0*per + 7
			}
			in[2][i] = float32(math.NaN())
			sameError(t, reduceScatter(t, net, in, rawRS(1)), gradcodec.ErrNonFinite, "failed on rank 2")
		})
	}
	t.Run("length", func(t *testing.T) {
		net := ringtest.NewNetwork(size)
		in := inputsFor(size, size*per, 4)
		in[3] = randData(5, size*(per+1))
		sameError(t, reduceScatter(t, net, in, rawRS(1)), ring.ErrShapeMismatch, "values")
	})
	t.Run("not-a-multiple", func(t *testing.T) {
		net := ringtest.NewNetwork(size)
		in := inputsFor(size, size*per+1, 4)
		sameError(t, reduceScatter(t, net, in, rawRS(1)), ring.ErrShapeMismatch, "not a multiple of the ring size")
	})
	t.Run("lost", func(t *testing.T) {
		net := ringtest.NewNetwork(size)
		net.AddFault(ringtest.Fault{From: 2, Nth: 4, Action: ringtest.CutSender})
		errs := reduceScatter(t, net, inputsFor(size, size*per, 5), rawRS(1))
		for r, err := range errs {
			var pl *ring.PeerLostError
			if r != 2 && (!errors.As(err, &pl) || pl.Rank != 2) {
				t.Fatalf("rank %d: %v, want rank 2 lost", r, err)
			}
		}
	})
	noLeak(t, base)
}
