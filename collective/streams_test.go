package collective

import (
	"context"
	"testing"

	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/ring"
)

// gradCodecWorld is memWorld with the real codecs (ring.GradCodec over
// gradcodec, pure Go for raw and int8), so that per-stream state is real.
func gradCodecWorld(t *testing.T, size int, mod func(*Config)) []*Comm {
	t.Helper()
	comms, _ := memWorldWith(t, size, mod, nil, newCodec)
	return comms
}

// codecState sums the encoders and residuals the Comm's codecs hold.
func codecState(c *Comm) (encoders, residuals int) {
	_, _ = c.submit(context.Background(), "codec state", func(context.Context) (Stats, error) {
		for _, cd := range c.codecs {
			if gc, ok := cd.(*ring.GradCodec); ok {
				e, r := gc.StreamState()
				encoders += e
				residuals += r
			}
		}
		return Stats{}, nil
	}).Wait()
	return
}

// TestStreamStateBounded: with a shape (so a default stream name) that
// changes every step, the streams, encoders and residuals kept stay within
// what Config.StreamIdle allows, and the results stay right.
func TestStreamStateBounded(t *testing.T) {
	ctx := context.Background()
	const size, idle, steps = 3, 4, 40
	comms := gradCodecWorld(t, size, func(c *Config) {
		c.Codec, c.WarmupSteps, c.StreamIdle, c.RawBelow = "int8", 0, idle, 256
	})
	maxEnc, maxRes := 0, 0
	for s := 0; s < steps; s++ {
		rows, cols := 16+s%7, 32+s // a new shape every step
		seed := int64(s)
		outs := make([][]float32, size)
		noErrors(t, each(comms, func(r int, c *Comm) error {
			outs[r] = rankData(seed, r, rows*cols)
			_, err := c.AllReduce(ctx, outs[r], WithShape(rows, cols), WithAverage())
			return err
		}))
		if e := metric.NMSE(outs[0], exactSumOf(size, func(r int) []float32 { return rankData(seed, r, rows*cols) }, true)); e > 1e-3 {
			t.Fatalf("step %d: NMSE %g", s, e)
		}
		for r, c := range comms {
			if n := c.streamCount(); n > idle+1 {
				t.Fatalf("step %d rank %d: %d streams kept, StreamIdle %d", s, r, n, idle)
			}
			e, res := codecState(c)
			maxEnc, maxRes = max(maxEnc, e), max(maxRes, res)
		}
	}
	// Each stream compresses (after its warm-up step) at most a few
	// chunks per rank; without release these would grow with every step.
	t.Logf("at most %d encoders and %d residuals per rank over %d shapes", maxEnc, maxRes, steps)
	if maxRes == 0 || maxRes > (idle+1)*2*size {
		t.Fatalf("residuals kept: up to %d, want (0, %d]", maxRes, (idle+1)*2*size)
	}
}

// TestStreamCapAndExplicitRelease: MaxStreams evicts the least recently
// used stream; ReleaseStream and ResetStreams free a stream's state, and it
// warms up again.
func TestStreamCapAndExplicitRelease(t *testing.T) {
	ctx := context.Background()
	const size = 2
	comms := gradCodecWorld(t, size, func(c *Config) {
		c.Codec, c.WarmupSteps, c.MaxStreams, c.RawBelow = "int8", 1, 3, 256
	})
	call := func(stream string) string {
		codecs := make([]string, size)
		noErrors(t, each(comms, func(r int, c *Comm) error {
			st, err := c.AllReduce(ctx, rankData(1, r, 40*40), WithShape(40, 40), WithStream(stream))
			codecs[r] = st.Codec
			return err
		}))
		return codecs[0]
	}
	for i := 0; i < 5; i++ {
		for _, s := range []string{"a", "b", "c", "d"} {
			call(s)
		}
		if n := comms[0].streamCount(); n > 3 {
			t.Fatalf("%d streams kept, MaxStreams 3", n)
		}
	}
	if got := call("d"); got != "int8" {
		t.Fatalf("stream d in use: codec %s, want int8", got)
	}
	if _, res := codecState(comms[0]); res == 0 {
		t.Fatal("no residuals kept")
	}
	noErrors(t, each(comms, func(r int, c *Comm) error { return c.ReleaseStream(ctx, "d") }))
	if got := call("d"); got != "raw" {
		t.Fatalf("after ReleaseStream: codec %s, want raw (warm-up again)", got)
	}
	noErrors(t, each(comms, func(r int, c *Comm) error { return c.ResetStreams(ctx) }))
	for r, c := range comms {
		if e, res := codecState(c); e+res != 0 || c.streamCount() != 0 {
			t.Fatalf("rank %d after ResetStreams: %d encoders, %d residuals, %d streams", r, e, res, c.streamCount())
		}
	}
	if got := call("d"); got != "raw" {
		t.Fatalf("after ResetStreams: codec %s, want raw", got)
	}
}
