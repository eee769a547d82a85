package collective

import (
	"context"

	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/worker"
)

// ringEngine runs the collectives with package ring over the worker's links.
// When metrics is set, every allreduce and reduce-scatter is counted there (the worker serves
// them on /metrics).
type ringEngine struct {
	r       *ring.Ring
	metrics *worker.Metrics
}

var _ engine = ringEngine{}

func (e ringEngine) allReduce(ctx context.Context, data []float32, rc ringCall) (ring.Stats, error) {
	return e.observe(e.r.AllReduce(ctx, data, rc.options()))
}

func (e ringEngine) reduceScatter(ctx context.Context, data []float32, rc ringCall) (ring.Stats, error) {
	return e.observe(e.r.ReduceScatter(ctx, data, rc.options()))
}

// observe counts a reduction in the worker's metrics.
func (e ringEngine) observe(st ring.Stats, err error) (ring.Stats, error) {
	if e.metrics != nil {
		e.metrics.Observe(st, err)
	}
	return st, err
}

func (rc ringCall) options() ring.Options {
	return ring.Options{Op: rc.op, Average: rc.average, Layout: rc.layout, Codec: rc.codec, Stream: rc.stream}
}

func (e ringEngine) allGather(ctx context.Context, op uint64, local []byte) ([][]byte, error) {
	return e.r.AllGather(ctx, op, local)
}

func (e ringEngine) broadcast(ctx context.Context, op uint64, data []byte, root int) ([]byte, error) {
	return e.r.Broadcast(ctx, op, data, root)
}

func (e ringEngine) barrier(ctx context.Context, op uint64) error {
	return e.r.Barrier(ctx, op)
}
