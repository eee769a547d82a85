package collective

import (
	"context"
	"fmt"
	"sync"

	"github.com/vccl/vccl/gradcodec"
)

// Tensor is one gradient tensor registered with a Bucketer: Rows × Cols
// values in row-major order in Grad (a bias or norm has Rows or Cols 1).
// Grad is reduced in place: after Bucketer.Wait it holds the average over
// ranks.
type Tensor struct {
	Name       string
	Rows, Cols int
	Grad       []float32
}

// BucketOptions configure a Bucketer.
type BucketOptions struct {
	// BucketBytes caps the float32 bytes of one bucket (a larger tensor
	// gets a bucket of its own). 0 means the Comm's Config.BucketBytes
	// (default 25 MiB).
	BucketBytes int
	// Sum leaves the sum over ranks in the gradients instead of the average.
	Sum bool
	// Name prefixes the buckets' stream names (error feedback, rate
	// control, warm-up). "" means "bucketer<N>", N counting the Bucketers of
	// the Comm, which is the same on every rank when they are created in the
	// same order.
	Name string
	// Options are added to every bucket's AllReduce (WithCodec,
	// WithBitsPerValue, ...). WithLayout, WithStream and WithAverage are set
	// by the Bucketer.
	Options []Option
}

// Bucketer fuses registered gradient tensors into buckets the way PyTorch's
// DistributedDataParallel does: in reverse registration order (gradients
// become ready in backward order), each bucket up to BucketBytes. A bucket's
// allreduce starts as soon as all its tensors are marked ready and every
// earlier bucket has started, so that all ranks start buckets in the same
// order, and it overlaps the rest of the backward pass. Each bucket passes
// its tensors' shapes to the ring, so compressed chunks keep their 2-D
// layout, and has a stable stream name for error feedback.
//
// MarkReady may be called from several goroutines; Wait must not run
// concurrently with MarkReady.
type Bucketer struct {
	c       *Comm
	tensors []Tensor
	buckets []*bucket
	where   []int // tensor index -> bucket index
	opts    []Option
	ctx     context.Context
	cancel  context.CancelFunc

	mu    sync.Mutex
	ready []bool
	next  int // next bucket to launch
}

type bucket struct {
	tensors []int // tensor indices, in bucket order
	offs    []int // offsets of the tensors in buf
	layout  []gradcodec.Shape
	buf     []float32
	stream  string
	pending int
	h       *Handle
}

// BucketInfo describes one bucket, for logs and tests.
type BucketInfo struct {
	Stream  string   // stream name of the bucket
	Tensors []string // names of its tensors, in bucket order
	Values  int      // values in the bucket
}

// NewBucketer registers tensors (their Grad slices are kept and reduced in
// place) and plans the buckets. Every rank must register the same tensors in
// the same order.
func NewBucketer(c *Comm, tensors []Tensor, opts BucketOptions) (*Bucketer, error) {
	fail := func(format string, args ...any) (*Bucketer, error) {
		return nil, &Error{Rank: c.rank, What: "bucketer", Err: fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidArgument)}
	}
	limit := opts.BucketBytes
	if limit == 0 {
		limit = c.cfg.BucketBytes
	}
	if limit < 4 {
		return fail("BucketBytes %d, want >= 4", limit)
	}
	if len(tensors) == 0 {
		return fail("no tensors")
	}
	for i, t := range tensors {
		if t.Rows <= 0 || t.Cols <= 0 {
			return fail("tensor %d (%q) has shape %dx%d, want positive rows and cols", i, t.Name, t.Rows, t.Cols)
		}
		if len(t.Grad) != t.Rows*t.Cols {
			return fail("tensor %d (%q) is %dx%d = %d values but Grad has %d: %v",
				i, t.Name, t.Rows, t.Cols, t.Rows*t.Cols, len(t.Grad), ErrShapeMismatch)
		}
	}
	name := opts.Name
	if name == "" {
		name = fmt.Sprintf("bucketer%d", c.bucketers.Add(1)-1)
	}
	b := &Bucketer{
		c:       c,
		tensors: append([]Tensor(nil), tensors...),
		where:   make([]int, len(tensors)),
		ready:   make([]bool, len(tensors)),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	var cur *bucket
	size := 0
	for i := len(tensors) - 1; i >= 0; i-- {
		n := tensors[i].Rows * tensors[i].Cols
		if cur == nil || (size > 0 && 4*(size+n) > limit) {
			cur = &bucket{stream: fmt.Sprintf("%s/bucket%d", name, len(b.buckets))}
			b.buckets = append(b.buckets, cur)
			size = 0
		}
		cur.tensors = append(cur.tensors, i)
		cur.offs = append(cur.offs, size)
		cur.layout = append(cur.layout, gradcodec.Shape{Rows: tensors[i].Rows, Cols: tensors[i].Cols})
		size += n
		b.where[i] = len(b.buckets) - 1
	}
	for _, bk := range b.buckets {
		n := 0
		for _, s := range bk.layout {
			n += s.Len()
		}
		bk.buf = make([]float32, n)
		bk.pending = len(bk.tensors)
	}
	b.opts = append([]Option(nil), opts.Options...)
	if !opts.Sum {
		b.opts = append(b.opts, WithAverage())
	}
	return b, nil
}

// Buckets describes the planned buckets in launch order.
func (b *Bucketer) Buckets() []BucketInfo {
	out := make([]BucketInfo, len(b.buckets))
	for k, bk := range b.buckets {
		info := BucketInfo{Stream: bk.stream, Values: len(bk.buf)}
		for _, i := range bk.tensors {
			info.Tensors = append(info.Tensors, b.tensors[i].Name)
		}
		out[k] = info
	}
	return out
}

// MarkReady says tensor i's gradient is final for this step. When that
// completes a bucket, the bucket's allreduce (and that of any later
// complete bucket waiting behind it) starts at once. The Grad slice must
// not be written again until Wait returns.
func (b *Bucketer) MarkReady(i int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i < 0 || i >= len(b.tensors) {
		return &Error{Rank: b.c.rank, What: "bucketer", Err: fmt.Errorf("MarkReady(%d): %d tensors registered: %w", i, len(b.tensors), ErrInvalidArgument)}
	}
	if b.ready[i] {
		return &Error{Rank: b.c.rank, What: "bucketer", Err: fmt.Errorf("tensor %d (%q) marked ready twice in one step: %w", i, b.tensors[i].Name, ErrInvalidArgument)}
	}
	b.ready[i] = true
	b.buckets[b.where[i]].pending--
	b.launchReady(false)
	return nil
}

// launchReady starts buckets in order while they are complete (all of them
// with all). Caller holds b.mu.
func (b *Bucketer) launchReady(all bool) {
	for b.next < len(b.buckets) {
		bk := b.buckets[b.next]
		if bk.pending > 0 && !all {
			return
		}
		for k, i := range bk.tensors {
			copy(bk.buf[bk.offs[k]:], b.tensors[i].Grad)
		}
		opts := append(append([]Option(nil), b.opts...), WithLayout(bk.layout), WithStream(bk.stream))
		bk.h = b.c.AllReduceAsync(b.ctx, bk.buf, opts...)
		b.next++
	}
}

// Wait starts the buckets not started yet (tensors never marked ready are
// taken as they are, like DDP's find_unused_parameters), waits for every
// bucket, and copies the reduced values back into the tensors' Grad. It
// returns the step's statistics summed over buckets. If ctx ends first, the
// collectives are aborted (and with them the Comm).
func (b *Bucketer) Wait(ctx context.Context) (Stats, error) {
	b.mu.Lock()
	b.launchReady(true)
	b.mu.Unlock()

	var total Stats
	var errs []error
	for _, bk := range b.buckets {
		select {
		case <-bk.h.Done():
		case <-ctx.Done():
			b.cancel()
			<-bk.h.Done()
		}
		st, err := bk.h.Wait()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		total = total.Add(st)
		for k, i := range bk.tensors {
			copy(b.tensors[i].Grad, bk.buf[bk.offs[k]:bk.offs[k]+len(b.tensors[i].Grad)])
		}
	}

	b.mu.Lock()
	for i := range b.ready {
		b.ready[i] = false
	}
	for _, bk := range b.buckets {
		bk.pending = len(bk.tensors)
		bk.h = nil
	}
	b.next = 0
	b.mu.Unlock()

	if len(errs) > 0 {
		if ctx.Err() != nil {
			return total, &Error{Rank: b.c.rank, What: "bucketer wait", Err: fmt.Errorf("%w (%w)", ctx.Err(), errs[0])}
		}
		return total, errs[0] // later buckets only repeat the abort
	}
	return total, nil
}
