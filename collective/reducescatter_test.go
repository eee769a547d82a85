package collective

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// TestReduceScatterInMemory: world sizes 1-8, raw (exact) and lossy, sum
// and average; each rank gets its slice of the reduced input, src stays
// unchanged.
func TestReduceScatterInMemory(t *testing.T) {
	ctx := context.Background()
	for size := 1; size <= 8; size++ {
		for _, codec := range []string{"raw", "int8"} {
			t.Run(fmt.Sprintf("size%d/%s", size, codec), func(t *testing.T) {
				comms, _ := memWorld(t, size, func(c *Config) { c.WarmupSteps = 0; c.Codec = codec; c.RawBelow = 64 })
				const rows, cols = 24, 50
				n := rows * cols
				for _, avg := range []bool{false, true} {
					seed := int64(size*10 + len(codec))
					outs := make([][]float32, size)
					noErrors(t, each(comms, func(r int, c *Comm) error {
						src := rankData(seed, r, size*n)
						keep := append([]float32(nil), src...)
						outs[r] = make([]float32, n)
						opts := []Option{WithShape(size*rows, cols), WithStream("rs")}
						if avg {
							opts = append(opts, WithAverage())
						}
						st, err := c.ReduceScatter(ctx, outs[r], src, opts...)
						if err == nil && hashOf(src) != hashOf(keep) {
							err = errors.New("src was modified")
						}
						if err == nil && size > 1 && st.Codec != codec {
							err = fmt.Errorf("stats codec %q, want %q", st.Codec, codec)
						}
						return err
					}))
					ref := exactSumOf(size, func(r int) []float32 { return rankData(seed, r, size*n) }, avg)
					for r := range size {
						e := metric.NMSE(outs[r], ref[r*n:(r+1)*n])
						if codec == "raw" && e > 1e-12 || codec != "raw" && (e > 1e-3 || math.IsNaN(e)) {
							t.Fatalf("avg %v rank %d: NMSE %g", avg, r, e)
						}
					}
				}
			})
		}
	}
}

// TestReduceScatterFaultsInMemory: a NaN on one rank or a corrupted frame
// fails every rank with the same cause naming the rank.
func TestReduceScatterFaultsInMemory(t *testing.T) {
	ctx := context.Background()
	const size, n = 4, 3000
	t.Run("nan", func(t *testing.T) {
		comms, _ := memWorld(t, size, func(c *Config) { c.WarmupSteps = 0; c.Codec = "int8" })
		errs := each(comms, func(r int, c *Comm) error {
			src := rankData(2, r, size*n)
			if r == 1 {
				src[n+5] = float32(math.Inf(-1)) // in rank 1's own slice
			}
			_, err := c.ReduceScatter(ctx, make([]float32, n), src)
			return err
		})
		for r, err := range errs {
			if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), "failed on rank 1") {
				t.Fatalf("rank %d: %v", r, err)
			}
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		comms, net := memWorld(t, size, func(c *Config) { c.WarmupSteps = 0; c.Codec = "raw" })
		net.AddFault(ringtest.Fault{From: 3, Nth: 3, Action: ringtest.Corrupt})
		errs := each(comms, func(r int, c *Comm) error {
			_, err := c.ReduceScatter(ctx, make([]float32, n), rankData(3, r, size*n))
			return err
		})
		for r, err := range errs {
			if !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), "failed on rank 0") {
				t.Fatalf("rank %d: %v", r, err)
			}
		}
	})
	t.Run("bad-length", func(t *testing.T) {
		comms, _ := memWorld(t, 1, nil)
		if _, err := comms[0].ReduceScatter(ctx, make([]float32, 3), make([]float32, 4)); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestAbsentRankInMemory: one rank never enters an allreduce; every other
// rank fails within the timeout with ErrTimeout naming it, and its Comm is
// aborted.
func TestAbsentRankInMemory(t *testing.T) {
	ctx := context.Background()
	const size, absent, timeout = 4, 2, time.Second
	comms, _ := memWorld(t, size, func(c *Config) { c.Timeout = timeout; c.Codec = "raw" })
	start := time.Now()
	errs := each(comms, func(r int, c *Comm) error {
		if r == absent {
			return nil
		}
		_, err := c.AllReduce(ctx, rankData(1, r, 5000))
		return err
	})
	took := time.Since(start)
	for r, err := range errs {
		if r == absent {
			continue
		}
		var te *TimeoutError
		if !errors.Is(err, ErrTimeout) || !errors.As(err, &te) || te.Absent != absent ||
			!strings.Contains(err.Error(), fmt.Sprintf("rank %d never entered", absent)) {
			t.Fatalf("rank %d: %v, want a timeout naming rank %d", r, err, absent)
		}
		if !errors.Is(comms[r].Err(), ErrTimeout) {
			t.Fatalf("rank %d: Comm not aborted: %v", r, comms[r].Err())
		}
	}
	if took < timeout || took > timeout+5*time.Second {
		t.Fatalf("took %v, timeout %v", took, timeout)
	}
}

// TestBroadcastAllGatherManyMessages: with the links' message limit lowered
// to 64 bytes, Broadcast, BroadcastBytes and AllGather of payloads many
// times larger work (they travel in pipelined pieces).
func TestBroadcastAllGatherManyMessages(t *testing.T) {
	ctx := context.Background()
	const size, limit = 5, 64
	comms, net := memWorldRing(t, size, nil, func(r *ring.Ring) { r.ChunkBytes = limit })
	net.SetMaxPayload(limit)
	outs := make([][]float32, size)
	blobs := make([][]byte, size)
	gathered := make([][][]byte, size)
	blob := func(r int) []byte { return []byte(strings.Repeat(fmt.Sprintf("rank %d;", r), 50*r)) }
	noErrors(t, each(comms, func(r int, c *Comm) error {
		x := rankData(int64(r), r, 1000) // 4000 bytes
		if err := c.Broadcast(ctx, x, 2); err != nil {
			return err
		}
		outs[r] = x
		b, err := c.BroadcastBytes(ctx, blob(r), 4)
		if err != nil {
			return err
		}
		blobs[r] = b
		gathered[r], err = c.AllGather(ctx, blob(r))
		return err
	}))
	want := rankData(2, 2, 1000)
	for r := range size {
		if hashOf(outs[r]) != hashOf(want) || string(blobs[r]) != string(blob(4)) {
			t.Fatalf("rank %d: broadcast differs", r)
		}
		for i, g := range gathered[r] {
			if string(g) != string(blob(i)) {
				t.Fatalf("rank %d: allgather part %d has %d bytes, want %d", r, i, len(g), len(blob(i)))
			}
		}
	}
}
