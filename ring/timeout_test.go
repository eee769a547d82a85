package ring_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// absentTimeout is the Ring.Timeout of the absent-rank tests.
const absentTimeout = 300 * time.Millisecond

// collectives runs one collective of each kind on a rank, by name.
var collectives = map[string]func(ctx context.Context, r *ring.Ring, op uint64) error{
	"allreduce": func(ctx context.Context, r *ring.Ring, op uint64) error {
		_, err := r.AllReduce(ctx, randData(uint64(r.Rank), 3000), ring.Options{Op: op, Codec: &ringtest.QuantCodec{}, SubChunkValues: 200})
		return err
	},
	"reducescatter": func(ctx context.Context, r *ring.Ring, op uint64) error {
		_, err := r.ReduceScatter(ctx, randData(uint64(r.Rank), 300*r.Size), ring.Options{Op: op, Codec: &ringtest.RawCodec{}, SubChunkValues: 100})
		return err
	},
	"allgather": func(ctx context.Context, r *ring.Ring, op uint64) error {
		_, err := r.AllGather(ctx, op, []byte(strings.Repeat("x", 100*r.Rank)))
		return err
	},
	"broadcast": func(ctx context.Context, r *ring.Ring, op uint64) error {
		_, err := r.Broadcast(ctx, op, []byte("payload from the root"), 0)
		return err
	},
	"barrier": func(ctx context.Context, r *ring.Ring, op uint64) error {
		return r.Barrier(ctx, op)
	},
}

// TestAbsentRank: one rank is alive (its links work) but never enters the
// collective. Every other rank must fail within the timeout (plus the
// extra wait and some slack) with the same ErrTimeout error naming the
// absent rank, and the absent rank, entering late, fails with it too.
func TestAbsentRank(t *testing.T) {
	base := runtime.NumGoroutine()
	names := []string{"allreduce", "reducescatter", "allgather", "broadcast", "barrier"}
	for _, name := range names {
		for _, size := range []int{2, 3, 5} {
			for _, absent := range []int{0, size - 1} {
				t.Run(fmt.Sprintf("%s/size%d/absent%d", name, size, absent), func(t *testing.T) {
					net := ringtest.NewNetwork(size)
					rings := make([]*ring.Ring, size)
					for r := range rings {
						rings[r] = net.Ring(r)
						rings[r].Timeout = absentTimeout
					}
					// Op 1 works on every rank; rank absent skips op 2.
					for r, err := range runRanks(t, size, func(ctx context.Context, r int) error {
						return collectives[name](ctx, rings[r], 1)
					}) {
						if err != nil {
							t.Fatalf("op 1 rank %d: %v", r, err)
						}
					}
					start := time.Now()
					took := make([]time.Duration, size)
					errs := runRanks(t, size, func(ctx context.Context, r int) error {
						if r == absent {
							return nil
						}
						err := collectives[name](ctx, rings[r], 2)
						took[r] = time.Since(start)
						return err
					})
					bound := absentTimeout + ring.TimeoutExtra(absentTimeout, ringtest.AbortGrace) + 3*time.Second
					var text string
					for r, err := range errs {
						if r == absent {
							continue
						}
						var te *ring.TimeoutError
						if !errors.Is(err, ring.ErrTimeout) || !errors.As(err, &te) || te.Absent != absent {
							t.Fatalf("rank %d: %v, want a timeout naming rank %d", r, err, absent)
						}
						if !strings.Contains(err.Error(), fmt.Sprintf("rank %d never entered", absent)) {
							t.Fatalf("rank %d: %q does not name the absent rank", r, err)
						}
						if took[r] < absentTimeout || took[r] > bound {
							t.Errorf("rank %d failed after %v, want within [%v, %v]", r, took[r], absentTimeout, bound)
						}
						if text == "" {
							text = err.Error()
						} else if err.Error() != text {
							t.Errorf("rank %d error differs:\n%v\n%v", r, err, text)
						}
					}
					// The straggler enters late and finds the same error, or,
					// where its previous rank had finished its part before
					// giving up (a barrier, a broadcast), it completes.
					ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
					defer cancel()
					late := collectives[name](ctx, rings[absent], 2)
					canFinish := name == "barrier" || name == "broadcast"
					if !(late == nil && canFinish) && (!errors.Is(late, ring.ErrTimeout) || late.Error() != text) {
						t.Errorf("late rank %d: %v, want %q", absent, late, text)
					}
				})
			}
		}
	}
	noLeak(t, base)
}

// TestTwoAbsentRanks: with two absent ranks that are not neighbours, no
// rank can hear from both sides of the ring; every other rank still fails
// by the deadline, naming the absent rank that precedes it.
func TestTwoAbsentRanks(t *testing.T) {
	const size = 6
	absent := []int{1, 4}
	net := ringtest.NewNetwork(size)
	start := time.Now()
	errs := runRanks(t, size, func(ctx context.Context, r int) error {
		if slices.Contains(absent, r) {
			return nil
		}
		rg := net.Ring(r)
		rg.Timeout = absentTimeout
		_, err := rg.AllReduce(ctx, randData(uint64(r), 1000), rawOpts(1)(r))
		return err
	})
	took := time.Since(start)
	for r, err := range errs {
		if slices.Contains(absent, r) {
			continue
		}
		want := 1 // the absent rank before r
		if r > 4 || r < 1 {
			want = 4
		}
		var te *ring.TimeoutError
		if !errors.As(err, &te) || te.Absent != want {
			t.Errorf("rank %d: %v, want a timeout naming rank %d", r, err, want)
		}
	}
	if bound := absentTimeout + ring.TimeoutExtra(absentTimeout, ringtest.AbortGrace) + 3*time.Second; took > bound {
		t.Errorf("took %v, bound %v", took, bound)
	}
}

// TestTimeoutSparesSlowRanks: ranks that enter late, but within the
// timeout, do not make anyone fail.
func TestTimeoutSparesSlowRanks(t *testing.T) {
	const size = 4
	net := ringtest.NewNetwork(size)
	in := inputsFor(size, 2000, 3)
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(size - 1)
	errs := runRanks(t, size, func(ctx context.Context, r int) error {
		rg := net.Ring(r)
		rg.Timeout = 10 * time.Second
		if r == 2 {
			wg.Wait() // enters only after every other rank has started
			<-release
		} else {
			wg.Done()
			if r == 0 {
				close(release)
			}
		}
		_, err := rg.AllReduce(ctx, in[r], rawOpts(1)(r))
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	checkIdentical(t, in)
}
