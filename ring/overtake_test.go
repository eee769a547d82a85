package ring_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// slowLink delays data messages so that status tokens overtake them.
type slowLink struct {
	ring.Link
	d time.Duration
}

func (l slowLink) Send(ctx context.Context, m ring.Message) error {
	if m.Kind == ring.KindReduceScatter || m.Kind == ring.KindAllGather {
		time.Sleep(l.d)
	}
	return l.Link.Send(ctx, m)
}

// failNth fails its at-th Decode with ErrBadFrame.
type failNth struct {
	ringtest.RawCodec
	n, at int64
	cnt   atomic.Int64
}

func (c *failNth) Decode(dst []float32, wire []byte) error {
	if c.cnt.Add(1) == c.at {
		return fmt.Errorf("injected: %w", gradcodec.ErrBadFrame)
	}
	return c.RawCodec.Decode(dst, wire)
}

// TestStatusOvertakingDataKeepsTheCause: a rank that stops early forwards
// other ranks' Done tokens ahead of data it never sent; the receiver must not
// take that for a protocol error of its own, which would hide the real cause
// (rank 1's bad frame) on every rank.
func TestStatusOvertakingDataKeepsTheCause(t *testing.T) {
	const size, k, sub = 4, 4, 256
	net := ringtest.NewNetwork(size)
	rings := make([]*ring.Ring, size)
	for r := range rings {
		rings[r] = net.Ring(r)
	}
	rings[3].Next = slowLink{rings[3].Next, 30 * time.Millisecond}
	errs := runRanks(t, size, func(ctx context.Context, r int) error {
		var cd ring.Codec = &ringtest.RawCodec{}
		if r == 1 {
			cd = &failNth{at: 2 * (size - 1) * k}
		}
		data := make([]float32, size*k*sub)
		_, err := rings[r].AllReduce(ctx, data, ring.Options{Op: 1, Codec: cd, SubChunkValues: sub})
		return err
	})
	for r, err := range errs {
		if !errors.Is(err, gradcodec.ErrBadFrame) || !strings.Contains(err.Error(), "failed on rank 1") {
			t.Errorf("rank %d: got %v, want rank 1's bad frame", r, err)
		}
	}
}
