package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/worker"
)

// engine runs ring operations; the real one is ring.Ring over the worker's
// links (engine_ring.go).
type engine interface {
	allReduce(ctx context.Context, data []float32, rc ringCall) (ring.Stats, error)
	reduceScatter(ctx context.Context, data []float32, rc ringCall) (ring.Stats, error)
	allGather(ctx context.Context, op uint64, local []byte) ([][]byte, error)
	broadcast(ctx context.Context, op uint64, data []byte, root int) ([]byte, error)
	barrier(ctx context.Context, op uint64) error
}

// ringCall is one ring allreduce.
type ringCall struct {
	op      uint64
	average bool
	layout  []gradcodec.Shape // nil: one flat buffer
	codec   ring.Codec
	stream  string
}

// codecKey identifies one ring.Codec instance (error feedback and rate
// control state live inside it, per stream).
type codecKey struct {
	codec, backend, preset string
	bpv                    float64
	ef                     bool
	rawBelow               int
}

// Comm is a communicator: this rank's handle on the job's ring. Its methods
// are safe for concurrent use, but collectives run in call order, and every
// rank must call the same collectives in the same order.
type Comm struct {
	cfg      Config
	rank     int
	size     int
	eng      engine
	closer   io.Closer // the worker; nil when there is none
	worker   *worker.Worker
	newCodec func(opts gradcodec.Options, errorFeedback bool, rawBelow int) (ring.Codec, error)

	base     context.Context
	cancel   context.CancelFunc
	loopDone chan struct{}

	mu     sync.Mutex
	queue  []*task
	wake   chan struct{}
	closed bool
	failed error // first failure; the Comm is aborted once set

	closeOnce sync.Once
	closeErr  error

	// Owned by the loop goroutine.
	nextOp       uint64
	warm         map[string]int    // warm-up count per stream (streams.go)
	streamUse    map[string]uint64 // per stream, the value of calls at its last use
	calls        uint64            // allreduces and reduce-scatters so far
	codecs       map[codecKey]ring.Codec
	scratchRaw   []float32
	scratchCoded []float32
	scratchRS    []float32

	statsMu sync.Mutex
	total   Stats

	bucketers atomic.Int64
}

// task is one queued collective.
type task struct {
	what string
	ctx  context.Context
	run  func(ctx context.Context) (Stats, error)
	h    *Handle
	enq  time.Time
}

// Handle is the pending result of an asynchronous collective.
type Handle struct {
	done  chan struct{}
	stats Stats
	err   error
}

// Wait blocks until the collective has finished and returns its statistics.
// It always returns: a collective ends at its context's end, at a lost peer
// (within Config.PeerTimeout), at Config.Timeout when a rank never enters it,
// or at Close.
func (h *Handle) Wait() (Stats, error) {
	<-h.done
	return h.stats, h.err
}

// Done is closed when the collective has finished.
func (h *Handle) Done() <-chan struct{} { return h.done }

func (h *Handle) finish(st Stats, err error) {
	h.stats, h.err = st, err
	close(h.done)
}

// Init joins the job described by cfg: with WorldSize 1 it needs no network;
// otherwise it starts the worker (memberlist membership, authenticated
// websocket links to the ring neighbours) and returns once the whole world
// is there or ctx or cfg.JoinTimeout ends.
func Init(ctx context.Context, cfg Config) (*Comm, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rt, err := startRuntime(ctx, cfg)
	if err != nil {
		return nil, &Error{Rank: cfg.Rank, What: "init", Err: err}
	}
	return newComm(cfg, rt), nil
}

// InitFromEnv is Init(ctx, ConfigFromEnv()): the configuration comes from
// the VCCL_* variables the launcher sets.
func InitFromEnv(ctx context.Context) (*Comm, error) {
	cfg, err := ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	return Init(ctx, cfg)
}

// runtime is what newComm needs from the process's runtime.
type runtime struct {
	rank, size int
	eng        engine
	closer     io.Closer
	newCodec   func(opts gradcodec.Options, errorFeedback bool, rawBelow int) (ring.Codec, error)
	worker     *worker.Worker // nil in tests over in-memory links
}

func newComm(cfg Config, rt runtime) *Comm {
	base, cancel := context.WithCancel(context.Background())
	c := &Comm{
		cfg:       cfg,
		rank:      rt.rank,
		size:      rt.size,
		eng:       rt.eng,
		closer:    rt.closer,
		newCodec:  rt.newCodec,
		worker:    rt.worker,
		base:      base,
		cancel:    cancel,
		loopDone:  make(chan struct{}),
		wake:      make(chan struct{}, 1),
		warm:      map[string]int{},
		streamUse: map[string]uint64{},
		codecs:    map[codecKey]ring.Codec{},
	}
	go c.loop()
	return c
}

// Rank returns this process's rank, 0..Size()-1.
func (c *Comm) Rank() int { return c.rank }

// Size returns the number of ranks.
func (c *Comm) Size() int { return c.size }

// Config returns the configuration the Comm runs with.
func (c *Comm) Config() Config { return c.cfg }

// Stats returns the sum of the statistics of every allreduce so far
// (Bucketer's included).
func (c *Comm) Stats() Stats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	return c.total
}

// Metrics returns the worker's counters (links, collectives, bytes), also
// served on Config.MetricsAddr; nil for a Comm without a worker.
func (c *Comm) Metrics() *worker.Metrics {
	if c.worker == nil {
		return nil
	}
	return c.worker.Metrics()
}

// Err returns the error that aborted the Comm, or nil.
func (c *Comm) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// Close aborts collectives still queued or running (wait on their handles
// first to let them finish), leaves the job and waits for every goroutine
// of the Comm and its worker. It is idempotent.
func (c *Comm) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.cancel()
		<-c.loopDone
		var errs []error
		for k, cd := range c.codecs {
			if cl, ok := cd.(io.Closer); ok {
				if err := cl.Close(); err != nil {
					errs = append(errs, fmt.Errorf("codec %s: %w", k.codec, err))
				}
			}
		}
		c.codecs = nil
		if c.closer != nil {
			if err := c.closer.Close(); err != nil {
				errs = append(errs, fmt.Errorf("worker: %w", err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			c.closeErr = &Error{Rank: c.rank, What: "close", Err: err}
		}
	})
	return c.closeErr
}

// submit queues a collective; run executes on the loop goroutine.
func (c *Comm) submit(ctx context.Context, what string, run func(ctx context.Context) (Stats, error)) *Handle {
	t := &task{what: what, ctx: ctx, run: run, h: &Handle{done: make(chan struct{})}, enq: time.Now()}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		t.h.finish(Stats{}, &Error{Rank: c.rank, What: what, Err: ErrClosed})
		return t.h
	}
	c.queue = append(c.queue, t)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return t.h
}

// invalid queues a task that fails with an argument error. It goes through
// the queue so that it aborts the Comm in call order like any failure.
func (c *Comm) invalid(ctx context.Context, what string, err error) *Handle {
	return c.submit(ctx, what, func(context.Context) (Stats, error) {
		return Stats{}, localError{fmt.Errorf("%w: %w", ErrInvalidArgument, err)}
	})
}

// localError marks a failure the other ranks cannot know about: the Comm
// closes its links so that they fail too (naming this rank) instead of
// waiting for a collective that will not come.
type localError struct{ err error }

func (e localError) Error() string { return e.err.Error() }
func (e localError) Unwrap() error { return e.err }

func (c *Comm) loop() {
	defer close(c.loopDone)
	for {
		c.mu.Lock()
		var t *task
		if len(c.queue) > 0 {
			t = c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
		}
		failed := c.failed
		c.mu.Unlock()
		if t == nil {
			select {
			case <-c.wake:
				continue
			case <-c.base.Done():
				c.drain()
				return
			}
		}
		if c.base.Err() != nil {
			t.h.finish(Stats{}, &Error{Rank: c.rank, What: t.what, Err: ErrClosed})
			continue
		}
		if failed != nil {
			t.h.finish(Stats{}, &Error{Rank: c.rank, What: t.what, Err: fmt.Errorf("%w: %w", ErrAborted, failed)})
			continue
		}
		c.runTask(t)
	}
}

// drain fails every task still queued after Close.
func (c *Comm) drain() {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	for _, t := range q {
		t.h.finish(Stats{}, &Error{Rank: c.rank, What: t.what, Err: ErrClosed})
	}
}

func (c *Comm) runTask(t *task) {
	ctx, cancel := context.WithCancel(t.ctx)
	stop := context.AfterFunc(c.base, cancel)
	start := time.Now()
	firstOp := c.nextOp + 1
	st, err := t.run(ctx)
	stop()
	cancel()
	st.Total = time.Since(start)
	st.QueueTime = start.Sub(t.enq)
	if err == nil {
		t.h.finish(st, nil)
		return
	}
	if c.base.Err() != nil && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	op := firstOp
	if op > c.nextOp {
		op = 0 // failed before starting a ring operation
	}
	e := &Error{Rank: c.rank, Op: op, What: t.what, Err: err}
	c.mu.Lock()
	if c.failed == nil {
		c.failed = e
	}
	c.mu.Unlock()
	var le localError
	if c.closer != nil && c.base.Err() == nil &&
		(errors.As(err, &le) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The peers cannot learn of this failure through the ring: drop the
		// links so that they fail within their peer timeout.
		_ = c.closer.Close()
	}
	t.h.finish(st, e)
}

// op returns the next operation sequence number (loop goroutine only).
func (c *Comm) op() uint64 {
	c.nextOp++
	return c.nextOp
}

// AllReduce replaces data, on every rank, with the element-wise sum (or,
// WithAverage, the mean) of every rank's data. Every rank ends with
// bit-identical values. It returns this call's statistics.
func (c *Comm) AllReduce(ctx context.Context, data []float32, opts ...Option) (Stats, error) {
	return c.AllReduceAsync(ctx, data, opts...).Wait()
}

// AllReduceAsync queues an AllReduce and returns at once; data must not be
// read or written until the Handle's Wait returns.
func (c *Comm) AllReduceAsync(ctx context.Context, data []float32, opts ...Option) *Handle {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	if err := c.checkCall(data, &o); err != nil {
		return c.invalid(ctx, "allreduce", err)
	}
	return c.submit(ctx, "allreduce", func(ctx context.Context) (Stats, error) {
		return c.count(c.runAllReduce(ctx, data, &o))
	})
}

// count adds a successful reduction's statistics to the Comm's total.
func (c *Comm) count(st Stats, err error) (Stats, error) {
	if err == nil {
		st.Calls = 1
		c.statsMu.Lock()
		c.total = c.total.Add(st)
		c.statsMu.Unlock()
	}
	return st, err
}

// checkCall validates and completes the per-call options.
func (c *Comm) checkCall(data []float32, o *callOptions) error {
	if o.codec == "" {
		o.codec = c.cfg.Codec
	}
	if err := validCodec(o.codec); err != nil {
		return err
	}
	if o.backend == "" {
		o.backend = c.cfg.Backend
	}
	if err := validBackend(o.backend); err != nil {
		return err
	}
	if o.bpv == 0 {
		o.bpv = c.cfg.BitsPerValue
	}
	if !(o.bpv > 0 && o.bpv <= 32) {
		return fmt.Errorf("bits per value %v, want in (0, 32]", o.bpv)
	}
	if o.preset == "" {
		o.preset = c.cfg.Preset
	}
	if o.errorFeedback == nil {
		ef := c.cfg.ErrorFeedback
		o.errorFeedback = &ef
	}
	if o.rawBelow == nil {
		rb := c.cfg.RawBelow
		o.rawBelow = &rb
	}
	if *o.rawBelow < 0 {
		return fmt.Errorf("raw-below %d, want >= 0", *o.rawBelow)
	}
	if o.layout != nil {
		n := 0
		for i, s := range o.layout {
			if s.Rows <= 0 || s.Cols <= 0 {
				return fmt.Errorf("layout tensor %d has shape %dx%d, want positive rows and cols", i, s.Rows, s.Cols)
			}
			n += s.Len()
		}
		if n != len(data) {
			return fmt.Errorf("layout covers %d values but data has %d: %w", n, len(data), ErrShapeMismatch)
		}
	}
	if o.stream == "" {
		o.stream = fmt.Sprintf("anon/n%d", len(data))
		for _, s := range o.layout {
			o.stream += fmt.Sprintf("/%dx%d", s.Rows, s.Cols)
		}
	}
	return nil
}

// codecFor returns the cached ring.Codec for k (loop goroutine only).
func (c *Comm) codecFor(k codecKey) (ring.Codec, error) {
	if c.size == 1 {
		return nil, nil // a single rank sends nothing: no codec to open
	}
	if cd, ok := c.codecs[k]; ok {
		return cd, nil
	}
	opts := gradcodec.Options{Codec: k.codec, Backend: k.backend, BitsPerValue: k.bpv, Preset: k.preset, Threads: c.cfg.codecThreads()}
	cd, err := c.newCodec(opts, k.ef, k.rawBelow)
	if err != nil {
		return nil, fmt.Errorf("codec %s (backend %s): %w", k.codec, k.backend, err)
	}
	if gc, ok := cd.(*ring.GradCodec); ok {
		gc.MaxEncoders = c.cfg.MaxEncoders
	}
	c.codecs[k] = cd
	return cd, nil
}

func (c *Comm) rawCodec() (ring.Codec, error) {
	return c.codecFor(codecKey{codec: "raw", backend: "auto", bpv: 32, rawBelow: math.MaxInt})
}

func isRawPiece(s gradcodec.Shape, rawBelow int) bool {
	return s.Rows == 1 || s.Cols == 1 || s.Len() < rawBelow
}

func addRingStats(st *Stats, rs ring.Stats) {
	st.Values += int64(rs.Values)
	st.WireBytes += rs.WireBytes
	st.RawBytes += rs.RawBytes
	st.EncodeTime += rs.EncodeTime
	st.DecodeTime += rs.DecodeTime
	st.NetworkTime += rs.WaitTime
}

// callCodec records the call's use of its stream and returns its codec:
// "raw" while the stream warms up (loop goroutine only).
func (c *Comm) callCodec(o *callOptions) string {
	if c.useStream(o.stream) < c.cfg.WarmupSteps && !o.noWarmup {
		return "raw"
	}
	return o.codec
}

// openCodec opens (or finds) the codec of a call. A codec that does not
// open here (no NVENC on this rank, an FFmpeg without libx265) fails before
// the ring starts: a localError, so the Comm drops its links and the peers
// fail naming this rank instead of waiting for messages that will not come.
func (c *Comm) openCodec(name string, o *callOptions) (ring.Codec, error) {
	var cd ring.Codec
	var err error
	if name == "raw" {
		cd, err = c.rawCodec()
	} else {
		cd, err = c.codecFor(codecKey{codec: name, backend: o.backend, preset: o.preset, bpv: o.bpv, ef: *o.errorFeedback, rawBelow: *o.rawBelow})
	}
	if err != nil {
		return nil, localError{fmt.Errorf("opening codec %s: %w", name, err)}
	}
	return cd, nil
}

// runAllReduce runs on the loop goroutine: it applies the warm-up and raw
// policies and runs one or two ring allreduces.
func (c *Comm) runAllReduce(ctx context.Context, data []float32, o *callOptions) (Stats, error) {
	codecName := c.callCodec(o)
	var st Stats
	st.Codec = codecName
	coded := func() (ring.Codec, error) { return c.openCodec(codecName, o) }
	run := func(buf []float32, layout []gradcodec.Shape, cd ring.Codec, stream string) error {
		rs, err := c.eng.allReduce(ctx, buf, ringCall{op: c.op(), average: o.average, layout: layout, codec: cd, stream: stream})
		addRingStats(&st, rs)
		return err
	}

	// Which pieces go raw.
	var rawIdx, codedIdx []int
	switch {
	case codecName == "raw":
	case o.layout == nil:
		if len(data) < *o.rawBelow {
			codecName, st.Codec = "raw", "raw"
		}
	default:
		for i, s := range o.layout {
			if isRawPiece(s, *o.rawBelow) {
				rawIdx = append(rawIdx, i)
			} else {
				codedIdx = append(codedIdx, i)
			}
		}
		if len(codedIdx) == 0 {
			codecName, st.Codec = "raw", "raw"
		}
	}
	if codecName == "raw" || len(rawIdx) == 0 {
		cd, err := coded()
		if err != nil {
			return st, err
		}
		return st, run(data, o.layout, cd, o.stream)
	}

	// Mixed: gather the compressed tensors and the raw ones into two
	// buffers, reduce each, scatter back.
	offs := make([]int, len(o.layout)+1)
	for i, s := range o.layout {
		offs[i+1] = offs[i] + s.Len()
	}
	gather := func(buf []float32, idx []int) ([]float32, []gradcodec.Shape) {
		buf = buf[:0]
		lay := make([]gradcodec.Shape, 0, len(idx))
		for _, i := range idx {
			buf = append(buf, data[offs[i]:offs[i+1]]...)
			lay = append(lay, o.layout[i])
		}
		return buf, lay
	}
	scatter := func(buf []float32, idx []int) {
		p := 0
		for _, i := range idx {
			p += copy(data[offs[i]:offs[i+1]], buf[p:])
		}
	}
	var codedLay, rawLay []gradcodec.Shape
	c.scratchCoded, codedLay = gather(c.scratchCoded, codedIdx)
	c.scratchRaw, rawLay = gather(c.scratchRaw, rawIdx)
	cd, err := coded()
	if err != nil {
		return st, err
	}
	if err := run(c.scratchCoded, codedLay, cd, o.stream); err != nil {
		return st, err
	}
	rc, err := c.openCodec("raw", o)
	if err != nil {
		return st, err
	}
	if err := run(c.scratchRaw, rawLay, rc, o.stream+"/raw"); err != nil {
		return st, err
	}
	scatter(c.scratchCoded, codedIdx)
	scatter(c.scratchRaw, rawIdx)
	return st, nil
}

// ReduceScatter sums src over all ranks (or, WithAverage, averages it) and
// writes this rank's slice of the result into dst, like
// torch.distributed.reduce_scatter_tensor: with n = len(dst), src holds
// Size()*n values on every rank, and dst receives the element-wise sum over
// the ranks of their src[Rank()*n:(Rank()+1)*n]. src is left unchanged.
//
// It is compressed like AllReduce — it is the first phase of one: every
// hop re-encodes the partial sum with the configured codec, with error
// feedback and rate control per stream (WithStream; the default name comes
// from the length and layout), and the first Config.WarmupSteps calls of a
// stream travel raw. WithShape or WithLayout describe src, so the codec sees
// its rows; pieces smaller than Config.RawBelow go inside the codec's
// container as int8 frames (video and tensor codecs) or raw, and a src of
// fewer than RawBelow values travels raw. Unlike the
// result of AllReduce, each rank's slice is its own exact sum of the decoded
// partial sums: no two ranks hold the same values to compare. Errors are
// those of AllReduce; every rank returns the same one.
func (c *Comm) ReduceScatter(ctx context.Context, dst, src []float32, opts ...Option) (Stats, error) {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	if len(src) != c.size*len(dst) {
		return c.invalid(ctx, "reducescatter", fmt.Errorf("src has %d values, want Size()*len(dst) = %d*%d: %w",
			len(src), c.size, len(dst), ErrShapeMismatch)).Wait()
	}
	if err := c.checkCall(src, &o); err != nil {
		return c.invalid(ctx, "reducescatter", err).Wait()
	}
	return c.submit(ctx, "reducescatter", func(ctx context.Context) (Stats, error) {
		return c.count(c.runReduceScatter(ctx, dst, src, &o))
	}).Wait()
}

// runReduceScatter runs on the loop goroutine: warm-up and raw policy, then
// one ring reduce-scatter over a copy of src.
func (c *Comm) runReduceScatter(ctx context.Context, dst, src []float32, o *callOptions) (Stats, error) {
	codecName := c.callCodec(o)
	if o.layout == nil && len(src) < *o.rawBelow {
		codecName = "raw"
	}
	if o.layout != nil {
		raw := true
		for _, s := range o.layout {
			raw = raw && isRawPiece(s, *o.rawBelow)
		}
		if raw {
			codecName = "raw"
		}
	}
	st := Stats{Codec: codecName}
	cd, err := c.openCodec(codecName, o)
	if err != nil {
		return st, err
	}
	c.scratchRS = append(c.scratchRS[:0], src...)
	rs, err := c.eng.reduceScatter(ctx, c.scratchRS, ringCall{op: c.op(), average: o.average, layout: o.layout, codec: cd, stream: o.stream})
	addRingStats(&st, rs)
	if err != nil {
		return st, err
	}
	n := len(dst)
	copy(dst, c.scratchRS[c.rank*n:(c.rank+1)*n])
	return st, nil
}

// Broadcast copies root's data into data on every other rank. Every rank
// must pass the same length. Like BroadcastBytes and AllGather it has no size
// limit: the payload travels in pipelined pieces of 1 MiB.
func (c *Comm) Broadcast(ctx context.Context, data []float32, root int) error {
	if root < 0 || root >= c.size {
		_, err := c.invalid(ctx, "broadcast", fmt.Errorf("root %d out of range 0..%d", root, c.size-1)).Wait()
		return err
	}
	_, err := c.submit(ctx, "broadcast", func(ctx context.Context) (Stats, error) {
		var payload []byte
		if c.rank == root {
			payload = gradcodec.AppendFloat32s(make([]byte, 0, 4*len(data)), data)
		}
		got, err := c.eng.broadcast(ctx, c.op(), payload, root)
		if err != nil {
			return Stats{}, err
		}
		if c.rank == root {
			return Stats{}, nil
		}
		if len(got) != 4*len(data) {
			return Stats{}, localError{fmt.Errorf("root %d sent %d bytes, this rank expects %d values (%d bytes): %w",
				root, len(got), len(data), 4*len(data), ErrShapeMismatch)}
		}
		gradcodec.Float32sFromBytes(data, got)
		return Stats{}, nil
	}).Wait()
	return err
}

// BroadcastBytes returns root's data on every rank; the other ranks' data
// is ignored.
func (c *Comm) BroadcastBytes(ctx context.Context, data []byte, root int) ([]byte, error) {
	if root < 0 || root >= c.size {
		_, err := c.invalid(ctx, "broadcast", fmt.Errorf("root %d out of range 0..%d", root, c.size-1)).Wait()
		return nil, err
	}
	return submitResult(ctx, c, "broadcast", func(ctx context.Context) ([]byte, error) {
		var payload []byte
		if c.rank == root {
			payload = data
		}
		return c.eng.broadcast(ctx, c.op(), payload, root)
	})
}

// AllGather returns every rank's local bytes, indexed by rank. Lengths may
// differ between ranks and have no limit (pipelined pieces of 1 MiB).
func (c *Comm) AllGather(ctx context.Context, local []byte) ([][]byte, error) {
	return submitResult(ctx, c, "allgather", func(ctx context.Context) ([][]byte, error) {
		got, err := c.eng.allGather(ctx, c.op(), local)
		if err == nil && len(got) != c.size {
			err = fmt.Errorf("allgather returned %d parts for %d ranks", len(got), c.size)
		}
		return got, err
	})
}

// submitResult queues run as one operation of c, like submit, waits for it
// and returns its result, or the zero T where it failed.
func submitResult[T any](ctx context.Context, c *Comm, what string, run func(ctx context.Context) (T, error)) (T, error) {
	var out T
	_, err := c.submit(ctx, what, func(ctx context.Context) (Stats, error) {
		got, err := run(ctx)
		out = got
		return Stats{}, err
	}).Wait()
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}

// Barrier returns once every rank has entered it.
func (c *Comm) Barrier(ctx context.Context) error {
	_, err := c.submit(ctx, "barrier", func(ctx context.Context) (Stats, error) {
		return Stats{}, c.eng.barrier(ctx, c.op())
	}).Wait()
	return err
}
