package ring

import (
	"context"
	"fmt"
	"math"
	"time"
	"unsafe"

	"github.com/vccl/vccl/gradcodec"
)

// Ring is one rank's view of the ring: Next sends to rank (Rank+1)%Size and
// Prev receives from rank (Rank-1+Size)%Size. A Ring runs one collective at a
// time: the caller serialises calls (package collective does), and every
// rank calls the same collectives in the same order with the same Op.
type Ring struct {
	Rank, Size int
	Next, Prev Link
	// AbortGrace bounds how long a rank waits for its next neighbour to take
	// a status message (the small messages that end a collective, and the
	// abort a rank passes on when it ends on a fatal error such as a lost
	// peer or an ended context). A neighbour that takes longer is reported
	// lost. 0 means DefaultAbortGrace (2s).
	AbortGrace time.Duration
	// Timeout bounds how long a rank stays in one collective when some
	// rank never enters it (see doc.go, "Ranks that never enter"). A rank
	// that has been in a collective for Timeout without hearing that its
	// previous rank entered fails it with a *TimeoutError naming that
	// rank, and the error travels downstream to every rank it can reach;
	// a rank that did hear from its previous rank waits up to
	// TimeoutExtra(Timeout, AbortGrace) longer for that error before it
	// gives up itself. 0 means no timeout (only the context, a lost peer
	// or a refused status message end a collective).
	Timeout time.Duration
	// ChunkBytes is the largest payload of a message of AllGather and
	// Broadcast: each rank's bytes travel as pieces of at most this size,
	// pipelined along the ring, so a payload has no size limit of its own.
	// It must not exceed the links' message limit. 0 means
	// DefaultChunkBytes (1 MiB); else at least MinChunkBytes.
	ChunkBytes int
}

// Options configure one AllReduce.
type Options struct {
	// Op is the collective's sequence number, equal on all ranks for the
	// same call and different from the previous call's (messages of another
	// op are rejected as replays).
	Op uint64
	// Average divides the sum by Size (before the final encode, so every
	// rank decodes the same values).
	Average bool
	// Layout lists the tensors of data in order (their lengths sum to
	// len(data)); chunks are cut along their whole rows where possible so
	// encoded pieces keep their 2-D shape. nil means one 1-D tensor.
	Layout []gradcodec.Shape
	// Codec compresses every chunk that crosses a hop. Required when Size > 1
	// and data is not empty.
	Codec Codec
	// SubChunkValues is the pipelining granularity: each ring chunk is sent
	// as sub-chunks of about this many values, so encoding, sending and
	// decoding overlap. 0 means DefaultSubChunkValues.
	SubChunkValues int
	// Stream names this buffer (e.g. the bucket) for the codec's per-stream
	// state (error feedback, rate control); the ring appends the phase,
	// chunk, sub-chunk and range. "" means "len<n>".
	Stream string
}

func (r *Ring) validate() error {
	if r.Size < 1 {
		return fmt.Errorf("ring: size %d, want >= 1", r.Size)
	}
	if r.Rank < 0 || r.Rank >= r.Size {
		return fmt.Errorf("ring: rank %d out of range [0, %d)", r.Rank, r.Size)
	}
	if r.ChunkBytes != 0 && r.ChunkBytes < MinChunkBytes {
		return fmt.Errorf("ring: ChunkBytes %d, want 0 (the default) or >= %d", r.ChunkBytes, MinChunkBytes)
	}
	if r.Size > 1 && (r.Next == nil || r.Prev == nil) {
		return fmt.Errorf("ring: rank %d of %d needs both Next and Prev links", r.Rank, r.Size)
	}
	return nil
}

// AllReduce sums data over all ranks in place (or averages it with
// opts.Average): a reduce-scatter in which each hop re-encodes the partial
// sum, then an allgather that forwards each chunk owner's encoded bytes
// unchanged. On success data is bit-identical on every rank. On error data
// holds unspecified values and every rank returns an error naming the rank
// where the failure arose (a *RemoteError, errors.Is-compatible with the
// cause's sentinel); see doc.go.
func (r *Ring) AllReduce(ctx context.Context, data []float32, opts Options) (Stats, error) {
	start := time.Now()
	st := Stats{Values: len(data)}
	if err := r.validate(); err != nil {
		return st, err
	}
	if r.Size == 1 {
		// Nothing to exchange, but the same checks as a larger ring.
		return st, r.alone(data, opts, start, &st)
	}
	err := r.reduce(ctx, data, opts, false, nil, &st)
	st.Total = time.Since(start)
	return st, err
}

// alone runs the checks of AllReduce and ReduceScatter on a ring of one
// rank: the layout, and NaN/Inf (on a larger ring the codec finds those).
func (r *Ring) alone(data []float32, opts Options, start time.Time, st *Stats) error {
	_, err := newTensors(len(data), opts.Layout)
	if err == nil {
		err = gradcodec.CheckFinite("rank 0", data)
	}
	st.Total = time.Since(start)
	if err != nil {
		return newLocalError(opts.Op, 0, fmt.Errorf("rank 0: %w", err))
	}
	return nil
}

// reduce runs AllReduce (or, with scatterOnly, ReduceScatter) on a ring of
// more than one rank and fills st's traffic and codec figures. A non-nil
// pre is a local failure found before any data moves.
func (r *Ring) reduce(ctx context.Context, data []float32, opts Options, scatterOnly bool, pre error, st *Stats) error {
	p, err := newPlanChunks(len(data), opts.Layout, r.Size, opts.SubChunkValues, scatterOnly)
	switch {
	case pre != nil:
	case err != nil:
		pre = err
	case opts.SubChunkValues < 0:
		pre = fmt.Errorf("ring: SubChunkValues %d is negative", opts.SubChunkValues)
	case opts.Codec == nil && len(data) > 0:
		pre = fmt.Errorf("ring: reduction of %d values without a Codec", len(data))
	}
	j := &allReduce{r: r, data: data, opts: opts, plan: p, scatterOnly: scatterOnly}
	e := &engine{r: r, op: opts.Op, total: uint64(len(data)), checkTotal: true, job: j}
	if pre == nil {
		j.setup(e)
	}
	err = e.run(ctx, pre)
	st.WireBytes = e.sWire
	st.RawBytes = e.sRaw
	st.EncodeTime = j.encTime
	st.DecodeTime = j.decTime
	st.WaitTime = e.sWait + e.cWait
	return err
}

// allReduce is the data part of AllReduce on one rank.
type allReduce struct {
	r    *Ring
	data []float32
	opts Options
	plan *plan
	// scatterOnly: the reduce-scatter phase alone, chunk r ending on rank r
	// (ReduceScatter).
	scatterOnly bool

	stream string
	sends  []step
	recvs  []step
	recon  []float32 // sender's scratch
	buf    []float32 // controller's scratch
	// raw: the codec is a RawWireCodec; the ring moves the values itself
	// (see doc.go, "The raw data path").
	raw bool

	encTime, decTime time.Duration
}

// setup builds the step lists: reduce-scatter steps s = 0..Size-2 send chunk
// Rank-s and receive chunk Rank-s-1; allgather steps send chunk Rank+1-s and
// receive chunk Rank-s (all mod Size). Chunk c ends up owned by rank c-1.
func (j *allReduce) setup(e *engine) {
	n, r := j.r.Size, j.r.Rank
	mod := func(x int) uint32 { return uint32(((x % n) + n) % n) }
	maxSub := 0
	for _, ch := range j.plan.chunks {
		for _, s := range ch {
			maxSub = max(maxSub, s.n)
		}
	}
	add := func(list []step, kind Kind, hop int, chunk uint32, wait bool) []step {
		for k := range j.plan.chunks[chunk] {
			list = append(list, step{kind: kind, hop: uint32(hop), chunk: chunk, sub: uint32(k), wait: wait})
		}
		return list
	}
	// ReduceScatter alone shifts the chunks by one so that rank r ends
	// holding chunk r (reducescatter.go).
	shift := 0
	if j.scatterOnly {
		shift = 1
	}
	for s := 0; s < n-1; s++ {
		j.sends = add(j.sends, KindReduceScatter, s, mod(r-s-shift), s > 0)
		j.recvs = add(j.recvs, KindReduceScatter, s, mod(r-s-1-shift), false)
	}
	for s := 0; s < n-1 && !j.scatterOnly; s++ {
		j.sends = add(j.sends, KindAllGather, s, mod(r+1-s), true)
		j.recvs = add(j.recvs, KindAllGather, s, mod(r-s), false)
	}
	if rc, ok := j.opts.Codec.(RawWireCodec); ok && rc.RawWire() {
		j.raw = true
		if littleEndian && !j.scatterOnly {
			e.place, e.owns = j.place, j.owns
		}
	} else {
		j.recon = make([]float32, maxSub)
		j.buf = make([]float32, maxSub)
	}
	bound, bounded := j.opts.Codec.(wireBound)
	e.recvMax = func(i int) int {
		s := j.recvs[i]
		n := j.plan.chunks[s.chunk][s.sub].n
		switch {
		case j.raw:
			return 4 * n
		case bounded:
			return bound.maxWire(n)
		}
		return math.MaxInt
	}
	j.stream = j.opts.Stream
	if j.stream == "" {
		j.stream = fmt.Sprintf("len%d", len(j.data))
	}
	e.sends, e.recvs = j.sends, j.recvs
	e.rawOf = func(i int) int64 {
		s := j.sends[i]
		return 4 * int64(j.plan.chunks[s.chunk][s.sub].n)
	}
}

// place is the engine's place for the raw path: an allgather message of
// this collective is received straight into the tensor, where it ends up
// anyway (no copy from a buffer). Only a header that is exactly one this
// rank receives in the allgather gets memory: the op, the kind, the total,
// a hop and the chunk that hop brings, an existing sub-chunk and its exact
// length. Nothing else of this rank touches that part of the tensor by
// then: its last reduce-scatter send left the socket before the owner
// could finish the sum (Send returns once the socket took the bytes), and
// the allgather forwards it only after it arrived. A message out of
// sequence that still matches (a peer that does not follow the protocol)
// lands in the tensor and then fails the collective in engine.check.
func (j *allReduce) place(m Message, n int) []byte {
	size := uint32(j.r.Size)
	if m.Op != j.opts.Op || m.Kind != KindAllGather || m.Total != uint64(len(j.data)) ||
		m.Hop >= size-1 || m.Chunk >= size || m.Chunk != uint32(((j.r.Rank-int(m.Hop))%j.r.Size+j.r.Size)%j.r.Size) ||
		int(m.Sub) >= len(j.plan.chunks[m.Chunk]) {
		return nil
	}
	seg := j.plan.chunks[m.Chunk][m.Sub]
	if seg.n == 0 || 4*seg.n != n {
		return nil
	}
	return wireOf(j.data[seg.off : seg.off+seg.n])
}

// owns reports that p is memory of the tensor (a payload place chose).
func (j *allReduce) owns(p []byte) bool {
	if len(p) == 0 || len(j.data) == 0 {
		return false
	}
	w := wireOf(j.data)
	base, at := uintptr(unsafe.Pointer(&w[0])), uintptr(unsafe.Pointer(&p[0]))
	return at >= base && at < base+uintptr(len(w))
}

func (j *allReduce) streamName(phase string, s step, seg segment) string {
	return fmt.Sprintf("%s/%s/c%d.s%d@%d+%d", j.stream, phase, s.chunk, s.sub, seg.off, seg.n)
}

func (j *allReduce) build(i int, in []byte, inSum uint32) ([]byte, uint32, error) {
	s := j.sends[i]
	seg := j.plan.chunks[s.chunk][s.sub]
	if seg.n == 0 {
		return nil, 0, nil
	}
	x := j.data[seg.off : seg.off+seg.n]
	if j.raw {
		return j.buildRaw(s, x, inSum)
	}
	if s.kind == KindAllGather && s.hop > 0 {
		return in, inSum, nil // forward the owner's bytes unchanged
	}
	phase := "rs"
	if s.kind == KindAllGather {
		phase = "ag"
		if j.opts.Average {
			d := float32(j.r.Size)
			for k := range x {
				x[k] /= d
			}
		}
	}
	// Only the allgather's owner keeps the reconstruction (every rank then
	// holds the same values); a reduce-scatter sender needs none.
	var recon []float32
	if s.kind == KindAllGather {
		recon = j.recon[:seg.n]
	}
	t0 := time.Now()
	wire, err := j.opts.Codec.Encode(j.streamName(phase, s, seg), x, seg.pieces, recon)
	j.encTime += time.Since(t0)
	if err != nil {
		return nil, 0, fmt.Errorf("rank %d: encode %s chunk %d sub %d (%d values): %w",
			j.r.Rank, kindName(s.kind), s.chunk, s.sub, seg.n, err)
	}
	if s.kind == KindAllGather {
		copy(x, recon) // the owner keeps what every other rank decodes
	}
	return wire, 0, nil
}

// buildRaw is build for a RawWireCodec: the payload is x's own memory. The
// values of this rank enter the sum either here (reduce-scatter hop 0, its
// own chunk, checked for NaN/Inf now) or in consumeRaw's fused add (checked
// there); every later send carries sums already checked. The checksum of
// what is sent comes from the pass that last touched x (inSum: consumeRaw's
// add, or the bytes as they arrived for an allgather forward), so no send
// reads x only to checksum it.
func (j *allReduce) buildRaw(s step, x []float32, inSum uint32) ([]byte, uint32, error) {
	t0 := time.Now()
	defer func() { j.encTime += time.Since(t0) }()
	switch {
	case s.kind == KindReduceScatter && s.hop == 0:
		k, sum := checkSum(x)
		if k >= 0 {
			return nil, 0, fmt.Errorf("rank %d: value %d of chunk %d sub %d is %v: %w",
				j.r.Rank, k, s.chunk, s.sub, x[k], gradcodec.ErrNonFinite)
		}
		return wireOf(x), sum, nil
	case s.kind == KindAllGather && s.hop == 0 && j.opts.Average:
		return wireOf(x), divSum(x, float32(j.r.Size)), nil
	}
	// A later reduce-scatter hop sends the sum consumeRaw made (inSum is
	// its checksum), allgather hop 0 the owner's full sum, a later
	// allgather hop the owner's values as they arrived with inSum.
	return wireOf(x), inSum, nil
}

func (j *allReduce) consume(i int, m Message) (bool, uint32, error) {
	s := j.recvs[i]
	seg := j.plan.chunks[s.chunk][s.sub]
	from := (j.r.Rank - 1 + j.r.Size) % j.r.Size
	if seg.n == 0 {
		if len(m.Payload) != 0 {
			return false, 0, fmt.Errorf("%w: rank %d got %d bytes from rank %d for empty chunk %d sub %d",
				ErrProtocol, j.r.Rank, len(m.Payload), from, s.chunk, s.sub)
		}
		return false, m.Sum, nil
	}
	x := j.data[seg.off : seg.off+seg.n]
	if j.raw {
		sum, err := j.consumeRaw(s, x, m, from)
		return false, sum, err
	}
	dst := x
	if s.kind == KindReduceScatter {
		dst = j.buf[:seg.n]
	}
	t0 := time.Now()
	err := j.opts.Codec.Decode(dst, m.Payload)
	j.decTime += time.Since(t0)
	if err != nil {
		return false, 0, fmt.Errorf("rank %d: decode %s chunk %d sub %d (%d values) from rank %d: %w",
			j.r.Rank, kindName(s.kind), s.chunk, s.sub, seg.n, from, err)
	}
	if s.kind == KindReduceScatter {
		for k, v := range dst {
			x[k] += v
		}
	}
	// An allgather payload that will be forwarded stays with the job.
	keep := s.kind == KindAllGather && int(s.hop) < j.r.Size-2
	return keep, m.Sum, nil
}

// consumeRaw is consume for a RawWireCodec: a reduce-scatter payload is
// added into x in one pass that also checks the sums for NaN/Inf (this
// rank's values enter the sum here) and computes the checksum of the sums,
// which the next send of x carries; an allgather payload is stored in x
// (one copy), from where buildRaw forwards it with the checksum it came
// with. It returns the checksum of x's wire bytes.
func (j *allReduce) consumeRaw(s step, x []float32, m Message, from int) (uint32, error) {
	p := m.Payload
	if len(p) != 4*len(x) {
		return 0, fmt.Errorf("rank %d: %s chunk %d sub %d from rank %d: raw payload of %d bytes for %d values: %w",
			j.r.Rank, kindName(s.kind), s.chunk, s.sub, from, len(p), len(x), gradcodec.ErrBadFrame)
	}
	t0 := time.Now()
	defer func() { j.decTime += time.Since(t0) }()
	if s.kind == KindAllGather {
		if len(x) > 0 && unsafe.Pointer(&p[0]) != unsafe.Pointer(&x[0]) { // not received in place
			copyWire(x, p)
		}
		return m.Sum, nil
	}
	k, sum := addWireSum(x, p)
	if k >= 0 {
		return 0, fmt.Errorf("rank %d: value %d of chunk %d sub %d is %v after adding this rank's values to rank %d's partial sum: %w",
			j.r.Rank, k, s.chunk, s.sub, x[k], from, gradcodec.ErrNonFinite)
	}
	return sum, nil
}

// Barrier returns once every rank has entered it: it is the token round
// alone (each rank's status travels once around the ring).
func (r *Ring) Barrier(ctx context.Context, op uint64) error {
	if err := r.validate(); err != nil {
		return err
	}
	if r.Size == 1 {
		return nil
	}
	// The token round only: nothing larger than a status message comes.
	e := &engine{r: r, op: op, job: &bytesJob{}, recvMax: func(int) int { return 0 }}
	return e.run(ctx, nil)
}
