package ring_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vccl/vccl/internal/testenv"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// absentTimeout is the Ring.Timeout of the absent-rank tests: long enough
// that on a loaded machine no present rank is taken for absent.
const absentTimeout = time.Second

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
// absent rank, and the absent rank, entering late, fails with it too. The
// 30 cases run at once (each waits out a timeout).
func TestAbsentRank(t *testing.T) {
	base := runtime.NumGoroutine()
	type tc struct {
		name         string
		size, absent int
	}
	var cases []tc
	for _, name := range []string{"allreduce", "reducescatter", "allgather", "broadcast", "barrier"} {
		for _, size := range []int{2, 3, 5} {
			for _, absent := range []int{0, size - 1} {
				cases = append(cases, tc{name, size, absent})
			}
		}
	}
	fails := testenv.Parallel(len(cases), func(i int) error {
		c := cases[i]
		if err := absentCase(c.name, c.size, c.absent); err != nil {
			return fmt.Errorf("%s size %d absent %d: %w", c.name, c.size, c.absent, err)
		}
		return nil
	})
	for _, err := range fails {
		if err != nil {
			t.Error(err)
		}
	}
	noLeak(t, base)
}

// absentCase runs one case of TestAbsentRank and returns what went wrong.
func absentCase(name string, size, absent int) error {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	net := ringtest.NewNetwork(size)
	rings := make([]*ring.Ring, size)
	for r := range rings {
		rings[r] = net.Ring(r)
	}
	each := func(f func(r int) error) []error { return testenv.Parallel(size, f) }
	// Op 1 works on every rank, without a timeout; rank absent skips op 2.
	if err := errors.Join(each(func(r int) error { return collectives[name](ctx, rings[r], 1) })...); err != nil {
		return fmt.Errorf("op 1: %w", err)
	}
	for _, rg := range rings {
		rg.Timeout = absentTimeout
	}
	start := time.Now()
	took := make([]time.Duration, size)
	errs := each(func(r int) error {
		if r == absent {
			return nil
		}
		err := collectives[name](ctx, rings[r], 2)
		took[r] = time.Since(start)
		return err
	})
	if ctx.Err() != nil {
		return fmt.Errorf("hit the %v hang guard: %v", hangGuard, errs)
	}
	bound := absentTimeout + ring.TimeoutExtra(absentTimeout, ringtest.AbortGrace) + 3*time.Second
	var text string
	for r, err := range errs {
		if r == absent {
			continue
		}
		var te *ring.TimeoutError
		if !errors.Is(err, ring.ErrTimeout) || !errors.As(err, &te) || te.Absent != absent {
			return fmt.Errorf("rank %d: %v, want a timeout naming rank %d", r, err, absent)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("rank %d never entered", absent)) {
			return fmt.Errorf("rank %d: %q does not name the absent rank", r, err)
		}
		if took[r] < absentTimeout || took[r] > bound {
			return fmt.Errorf("rank %d failed after %v, want within [%v, %v]", r, took[r], absentTimeout, bound)
		}
		if text == "" {
			text = err.Error()
		} else if err.Error() != text {
			return fmt.Errorf("rank %d error differs:\n%v\n%v", r, err, text)
		}
	}
	// The straggler enters late and finds the same error, or, where its
	// previous rank had finished its part before giving up (a barrier, a
	// broadcast), it completes.
	late := collectives[name](ctx, rings[absent], 2)
	canFinish := name == "barrier" || name == "broadcast"
	if !(late == nil && canFinish) && (!errors.Is(late, ring.ErrTimeout) || late.Error() != text) {
		return fmt.Errorf("late rank %d: %v, want %q", absent, late, text)
	}
	return nil
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

// TestTimeoutSparesSlowRanks: a rank that enters late, but well within the
// timeout, makes nobody fail.
func TestTimeoutSparesSlowRanks(t *testing.T) {
	const size, late = 4, 300 * time.Millisecond
	net := ringtest.NewNetwork(size)
	in := inputsFor(size, 2000, 3)
	start := time.Now()
	errs := runRanks(t, size, func(ctx context.Context, r int) error {
		rg := net.Ring(r)
		rg.Timeout = 10 * late
		if r == 2 {
			<-time.After(late) // the scenario: rank 2 is late
		}
		_, err := rg.AllReduce(ctx, in[r], rawOpts(1)(r))
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < late {
		t.Fatalf("finished after %v, before the late rank entered", took)
	}
	checkIdentical(t, in)
}
