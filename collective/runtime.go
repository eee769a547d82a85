package collective

import (
	"context"
	"errors"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
)

// startRuntime starts what a Comm runs on: for one rank nothing but the
// ring's identity; for several the worker and its links.
func startRuntime(ctx context.Context, cfg Config) (runtime, error) {
	if cfg.WorldSize == 1 {
		return runtime{
			rank: 0, size: 1,
			eng:      ringEngine{r: &ring.Ring{Rank: 0, Size: 1}},
			newCodec: newCodec,
		}, nil
	}
	return runtime{}, errors.New("TODO worker")
}

// newCodec opens a ring.GradCodec: gradcodec's codecs in ring's container,
// with error feedback per stream when ef is set. Pieces of fewer than
// rawBelow values go raw.
func newCodec(opts gradcodec.Options, ef bool, rawBelow int) (ring.Codec, error) {
	gc, err := ring.NewGradCodec(opts, ef)
	if err != nil {
		return nil, err
	}
	gc.RawBelow = rawBelow
	return gc, nil
}
