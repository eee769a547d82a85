package collective

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
)

// TestCodecOpenFailureEndsEveryRank: rank 1 cannot open its codec (backend
// nvenc on a machine without NVENC). Its failure happens before the ring
// starts, so the others learn of it only through the dropped links: they must
// fail naming rank 1, not wait for their context.
func TestCodecOpenFailureEndsEveryRank(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real loopback workers")
	}
	if !gradcodec.Registered("h264") {
		t.Skip("h264 is not registered in this build (the video plug-in needs cgo)")
	}
	const size, bad = 3, 1
	comms := loopbackWorld(t, size, func(c *Config) {
		c.Codec = "h264"
		c.WarmupSteps = 0
		c.PeerTimeout = 3 * time.Second
		if c.Rank == bad {
			c.Backend = "nvenc"
		}
	})
	errs := each(comms, func(r int, c *Comm) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := c.AllReduce(ctx, make([]float32, 64*1024), WithShape(256, 256))
		return err
	})
	for r, err := range errs {
		switch {
		case err == nil:
			t.Errorf("rank %d: allreduce succeeded, want an error", r)
		case errors.Is(err, context.DeadlineExceeded):
			t.Errorf("rank %d: waited for its context: %v", r, err)
		case r == bad:
			if !errors.Is(err, gradcodec.ErrBackendUnavailable) {
				t.Errorf("rank %d: got %v, want ErrBackendUnavailable", r, err)
			}
		default:
			var lost *PeerLostError
			if !errors.As(err, &lost) || lost.Rank != bad {
				t.Errorf("rank %d: got %v, want rank %d lost", r, err, bad)
			}
		}
	}
}
