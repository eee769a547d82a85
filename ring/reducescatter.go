package ring

import (
	"context"
	"fmt"
	"time"

	"github.com/vccl/vccl/gradcodec"
)

// ReduceScatter sums data over all ranks (or averages it with
// opts.Average) and leaves on each rank only its own slice of the result,
// like torch.distributed.reduce_scatter_tensor: data holds Size*n values on
// every rank, and on success data[Rank*n:(Rank+1)*n] holds element-wise
// sum (or mean) over the ranks of their data[Rank*n:(Rank+1)*n]. The rest of
// data holds unspecified values (partial sums) afterwards.
//
// It is the first phase of AllReduce with the chunks shifted by one: ring
// chunk c is values [c*n, (c+1)*n) and ends on rank c. Every hop re-encodes
// the partial sum (Codec.Encode, stream "<Stream>/scatter/rs/c<chunk>..."),
// with the error feedback and rate control of AllReduce; the owner adds its
// own exact values to the last decoded partial sum, so nothing of its result
// is encoded by itself. Sub-chunk cuts follow the rows of opts.Layout (the
// layout of the whole Size*n input). Errors are those of AllReduce: every
// rank returns the same *RemoteError; a NaN or Inf in a rank's own slice,
// which it never encodes, is found before any data moves.
func (r *Ring) ReduceScatter(ctx context.Context, data []float32, opts Options) (Stats, error) {
	start := time.Now()
	st := Stats{Values: len(data)}
	if err := r.validate(); err != nil {
		return st, err
	}
	var pre error
	n := len(data) / r.Size
	if len(data)%r.Size != 0 {
		pre = fmt.Errorf("ring: reduce-scatter of %d values over %d ranks: not a multiple of the ring size: %w",
			len(data), r.Size, ErrShapeMismatch)
	} else if err := gradcodec.CheckFinite(fmt.Sprintf("own slice [%d, %d)", r.Rank*n, (r.Rank+1)*n), data[r.Rank*n:(r.Rank+1)*n]); err != nil {
		pre = err
	}
	if r.Size == 1 {
		if pre != nil {
			return st, newLocalError(opts.Op, 0, fmt.Errorf("rank 0: %w", pre))
		}
		return st, r.alone(data, opts, start, &st)
	}
	if opts.Stream == "" {
		opts.Stream = fmt.Sprintf("len%d", len(data))
	}
	opts.Stream += "/scatter"
	err := r.reduce(ctx, data, opts, true, pre, &st)
	if err == nil && opts.Average {
		own := data[r.Rank*n : (r.Rank+1)*n]
		d := float32(r.Size)
		for k := range own {
			own[k] /= d
		}
	}
	st.Total = time.Since(start)
	return st, err
}
