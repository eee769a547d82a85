package collective

import (
	"context"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/worker"
)

// startRuntime starts the worker (membership and links; with one rank no
// network at all) and puts a ring over its links.
func startRuntime(ctx context.Context, cfg Config) (runtime, error) {
	w, err := worker.Start(ctx, worker.Config{
		Rank:           cfg.Rank,
		WorldSize:      cfg.WorldSize,
		LocalRank:      cfg.LocalRank,
		Join:           cfg.Join,
		BindAddr:       cfg.BindAddr,
		BindPort:       cfg.BindPort,
		Secret:         cfg.Secret,
		JoinTimeout:    cfg.JoinTimeout,
		PeerTimeout:    cfg.PeerTimeout,
		MetricsAddr:    cfg.MetricsAddr,
		SharedMemBytes: cfg.SharedMemBytes,
		Logger:         cfg.Logger,
	})
	if err != nil {
		return runtime{}, err
	}
	r := &ring.Ring{Rank: w.Rank(), Size: w.Size(), Timeout: cfg.Timeout}
	if w.Size() > 1 {
		r.Next, r.Prev = w.Next(), w.Prev()
	}
	return runtime{
		rank:     w.Rank(),
		size:     w.Size(),
		eng:      ringEngine{r: r, metrics: w.Metrics()},
		closer:   w,
		newCodec: newCodec,
		worker:   w,
	}, nil
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
