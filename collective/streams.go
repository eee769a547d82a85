package collective

import (
	"context"

	"github.com/vccl/vccl/ring"
)

// Per-stream state — the warm-up count here, error-feedback residuals,
// encoder contexts and rate control inside the codecs — lives until the
// stream is released: when it has been idle for Config.StreamIdle calls,
// when Config.MaxStreams is exceeded (least recently used first), or by
// ReleaseStream and ResetStreams. All of it is owned by the loop goroutine.

// useStream records a use of stream by the next allreduce or
// reduce-scatter, releases the streams that became idle or exceed the cap,
// and returns how many calls of stream came before (for warm-up).
func (c *Comm) useStream(stream string) int {
	c.calls++
	c.streamUse[stream] = c.calls
	if idle := uint64(c.cfg.StreamIdle); idle > 0 && c.calls > idle {
		for s, last := range c.streamUse {
			if c.calls-last > idle {
				c.releaseStream(s)
			}
		}
	}
	for c.cfg.MaxStreams > 0 && len(c.streamUse) > c.cfg.MaxStreams {
		oldest, at := "", c.calls
		for s, last := range c.streamUse {
			if last < at {
				oldest, at = s, last
			}
		}
		c.releaseStream(oldest)
	}
	steps := c.warm[stream]
	c.warm[stream] = steps + 1
	return steps
}

// releaseStream frees everything kept for stream (loop goroutine only).
func (c *Comm) releaseStream(stream string) {
	delete(c.streamUse, stream)
	delete(c.warm, stream)
	for _, cd := range c.codecs {
		if sr, ok := cd.(ring.StreamReleaser); ok {
			sr.ReleaseStream(stream)
			sr.ReleaseStream(stream + "/raw") // the raw part of a mixed layout
		}
	}
}

// ReleaseStream frees the state this rank keeps for stream (the name given
// to WithStream, or a Bucketer's bucket): error-feedback residuals, codec
// contexts and rate control, and the warm-up count — the stream's next
// allreduce starts afresh and warms up again. It runs in call order with
// the collectives, and is local: call it on every rank at the same point,
// so that the ranks agree on the stream's warm-up.
func (c *Comm) ReleaseStream(ctx context.Context, stream string) error {
	_, err := c.submit(ctx, "release stream", func(context.Context) (Stats, error) {
		c.releaseStream(stream)
		return Stats{}, nil
	}).Wait()
	return err
}

// ResetStreams releases every stream, like ReleaseStream of each.
func (c *Comm) ResetStreams(ctx context.Context) error {
	_, err := c.submit(ctx, "reset streams", func(context.Context) (Stats, error) {
		for s := range c.streamUse {
			c.releaseStream(s)
		}
		for s := range c.warm {
			c.releaseStream(s)
		}
		return Stats{}, nil
	}).Wait()
	return err
}

// streamCount returns how many streams hold state (tests).
func (c *Comm) streamCount() int {
	n := 0
	_, _ = c.submit(context.Background(), "count streams", func(context.Context) (Stats, error) {
		n = len(c.streamUse)
		return Stats{}, nil
	}).Wait()
	return n
}
