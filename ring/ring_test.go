package ring_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/internal/testenv"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/ring/ringtest"
)

// hangGuard bounds every test collective: a test that hits it has found a
// hang (the ring must end on its own, not by this deadline).
const hangGuard = 20 * time.Second

// runRanks runs f on every rank concurrently and returns each rank's error.
func runRanks(t testing.TB, n int, f func(ctx context.Context, rank int) error) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	errs := testenv.Parallel(n, func(i int) error { return f(ctx, i) })
	if ctx.Err() != nil {
		t.Fatalf("collective hit the %v hang guard: %v", hangGuard, errs)
	}
	return errs
}

// usableAgain checks that after a failure that was not fatal the ring of
// net works: an allreduce of op op succeeds with bit-identical results.
func usableAgain(t testing.TB, net *ringtest.Network, op uint64) {
	t.Helper()
	in := inputsFor(net.Size(), 500, op)
	for r, err := range allReduce(t, net, in, rawOpts(op)) {
		if err != nil {
			t.Fatalf("after the failure, rank %d: %v", r, err)
		}
	}
	checkIdentical(t, in)
}

// noErrors fails the test if any rank returned an error.
func noErrors(t testing.TB, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

func randData(seed uint64, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 42))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func hash(x []float32) [32]byte {
	b := make([]byte, 0, 4*len(x))
	for _, v := range x {
		u := math.Float32bits(v)
		b = append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	return sha256.Sum256(b)
}

// allReduce runs one AllReduce on every rank of net over inputs (modified in
// place) and returns the per-rank errors.
func allReduce(t testing.TB, net *ringtest.Network, inputs [][]float32, mk func(rank int) ring.Options) []error {
	t.Helper()
	return runRanks(t, net.Size(), func(ctx context.Context, rank int) error {
		_, err := net.Ring(rank).AllReduce(ctx, inputs[rank], mk(rank))
		return err
	})
}

func inputsFor(size, n int, seed uint64) [][]float32 {
	in := make([][]float32, size)
	for r := range in {
		in[r] = randData(seed+uint64(r), n)
	}
	return in
}

func reference(in [][]float32, average bool) []float64 {
	ref := make([]float64, len(in[0]))
	for _, x := range in {
		for i, v := range x {
			ref[i] += float64(v)
		}
	}
	if average {
		for i := range ref {
			ref[i] /= float64(len(in))
		}
	}
	return ref
}

func checkIdentical(t testing.TB, out [][]float32) {
	t.Helper()
	h0 := hash(out[0])
	for r := 1; r < len(out); r++ {
		if hash(out[r]) != h0 {
			t.Fatalf("rank %d result differs from rank 0 (not bit-identical)", r)
		}
	}
}

func TestAllReduceRawExact(t *testing.T) {
	lengths := []int{0, 1, 2, 3, 5, 7, 13, 100, 1001, 4097}
	for size := 1; size <= 8; size++ {
		for _, n := range lengths {
			for _, avg := range []bool{false, true} {
				t.Run(fmt.Sprintf("size%d/n%d/avg%v", size, n, avg), func(t *testing.T) {
					net := ringtest.NewNetwork(size)
					in := inputsFor(size, n, uint64(size*1000+n))
					ref := reference(in, avg)
					mag := make([]float64, n) // sum of |x|: the float32 rounding scale
					for _, x := range in {
						for i, v := range x {
							mag[i] += math.Abs(float64(v))
						}
					}
					errs := allReduce(t, net, in, func(rank int) ring.Options {
						return ring.Options{Op: 1, Average: avg, Codec: &ringtest.RawCodec{}, SubChunkValues: 64}
					})
					noErrors(t, errs)
					checkIdentical(t, in)
					// Each value is a float32 sum of size terms: allow
					// size float32 roundings of the running magnitude.
					for i, v := range in[0] {
						tol := float64(size) * mag[i] * 6e-8
						if math.Abs(float64(v)-ref[i]) > tol {
							t.Fatalf("value %d = %v, float64 reference %v (tol %g)", i, v, ref[i], tol)
						}
					}
				})
			}
		}
	}
}

// noLeak fails the test if goroutines started after base are still running
// shortly after the collectives returned (polls without sleeping).
func noLeak(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutine leak: %d running, %d before\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

func TestAllReduceLossyWithinNMSE(t *testing.T) {
	const n = 10007
	const maxNMSE = 1e-3 // QuantCodec: ~1e-4 per encode, Size re-encodes
	for size := 2; size <= 8; size++ {
		t.Run(fmt.Sprintf("size%d", size), func(t *testing.T) {
			net := ringtest.NewNetwork(size)
			in := inputsFor(size, n, uint64(size))
			ref := reference(in, true)
			errs := allReduce(t, net, in, func(rank int) ring.Options {
				return ring.Options{Op: 7, Average: true, Codec: &ringtest.QuantCodec{}, SubChunkValues: 500}
			})
			noErrors(t, errs)
			checkIdentical(t, in)
			if e := metric.NMSE(in[0], ref); e > maxNMSE || e == 0 {
				t.Fatalf("NMSE %g, want (0, %g]", e, maxNMSE)
			}
		})
	}
}

// TestAllReduceBackpressure runs with links that hold one message, so every
// Send blocks until the neighbour receives: the pipeline must not deadlock.
func TestAllReduceBackpressure(t *testing.T) {
	for _, size := range []int{2, 3, 5} {
		net := ringtest.NewNetwork(size)
		net.SetCapacity(1)
		net.Delay(1%size, time.Millisecond) // one slow link perturbs the timing
		in := inputsFor(size, 3001, 9)
		ref := reference(in, false)
		errs := allReduce(t, net, in, func(rank int) ring.Options {
			return ring.Options{Op: 1, Codec: &ringtest.RawCodec{}, SubChunkValues: 100}
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("size %d rank %d: %v", size, r, err)
			}
		}
		checkIdentical(t, in)
		if e := metric.NMSE(in[0], ref); e > 1e-12 {
			t.Fatalf("size %d: NMSE %g", size, e)
		}
	}
}

// TestAllReduceLayoutPieces checks that the codec sees pieces that keep the
// layout's row shapes and stream names that are stable across calls.
func TestAllReduceLayoutPieces(t *testing.T) {
	layout := []gradcodec.Shape{{Rows: 64, Cols: 100}, {Rows: 1, Cols: 100}, {Rows: 33, Cols: 50}, {Rows: 7, Cols: 3}}
	n := 0
	for _, s := range layout {
		n += s.Len()
	}
	const size = 3
	net := ringtest.NewNetwork(size)
	codecs := make([]*recordingCodec, size)
	for r := range codecs {
		codecs[r] = &recordingCodec{Codec: &ringtest.RawCodec{}}
	}
	var first [size]map[string]bool
	for op := uint64(1); op <= 2; op++ {
		in := inputsFor(size, n, op)
		ref := reference(in, false)
		errs := allReduce(t, net, in, func(rank int) ring.Options {
			return ring.Options{Op: op, Layout: layout, Codec: codecs[rank], SubChunkValues: 1000, Stream: "bucket0"}
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("op %d rank %d: %v", op, r, err)
			}
		}
		if e := metric.NMSE(in[0], ref); e > 1e-12 {
			t.Fatalf("NMSE %g", e)
		}
		for r, c := range codecs {
			if op == 1 {
				first[r] = c.take()
				continue
			}
			got := c.take()
			if fmt.Sprint(got) != fmt.Sprint(first[r]) {
				t.Fatalf("rank %d: streams changed between calls:\n%v\n%v", r, first[r], got)
			}
		}
	}
	for r, c := range codecs {
		for _, ps := range c.pieces {
			for _, p := range ps {
				ok := p.Rows == 1
				for _, s := range layout {
					ok = ok || p.Cols == s.Cols
				}
				if !ok {
					t.Fatalf("rank %d: piece %dx%d matches no tensor's rows", r, p.Rows, p.Cols)
				}
			}
		}
		for s := range first[r] {
			if !strings.HasPrefix(s, "bucket0/") {
				t.Fatalf("stream %q lacks the bucket name", s)
			}
		}
	}
}

type recordingCodec struct {
	ring.Codec
	mu      sync.Mutex
	streams map[string]bool
	pieces  [][]gradcodec.Shape
}

func (c *recordingCodec) Encode(stream string, src []float32, pieces []gradcodec.Shape, recon []float32) ([]byte, error) {
	c.mu.Lock()
	if c.streams == nil {
		c.streams = map[string]bool{}
	}
	if c.streams[stream] {
		c.mu.Unlock()
		return nil, fmt.Errorf("stream %q encoded twice in one call", stream)
	}
	c.streams[stream] = true
	c.pieces = append(c.pieces, append([]gradcodec.Shape(nil), pieces...))
	c.mu.Unlock()
	return c.Codec.Encode(stream, src, pieces, recon)
}

func (c *recordingCodec) take() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams
	c.streams = nil
	return s
}

// sameError checks every rank failed, with errors.Is(target), the same text
// on every rank, naming want (e.g. "rank 2").
func sameError(t *testing.T, errs []error, target error, want string, skip ...int) {
	t.Helper()
	var text string
	for r, err := range errs {
		if contains(skip, r) {
			continue
		}
		if err == nil {
			t.Fatalf("rank %d: no error", r)
		}
		if !errors.Is(err, target) {
			t.Fatalf("rank %d: %v is not %v", r, err, target)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("rank %d: %q does not name %q", r, err, want)
		}
		if text == "" {
			text = err.Error()
		} else if err.Error() != text {
			t.Errorf("rank %d error differs:\n%v\n%v", r, err, text)
		}
	}
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func rawOpts(op uint64) func(int) ring.Options {
	return func(int) ring.Options {
		return ring.Options{Op: op, Codec: &ringtest.RawCodec{}, SubChunkValues: 128}
	}
}

func TestFaultCorruptFrame(t *testing.T) {
	base := runtime.NumGoroutine()
	for _, kind := range []ring.Kind{ring.KindReduceScatter, ring.KindAllGather} {
		t.Run(kind.String(), func(t *testing.T) {
			net := ringtest.NewNetwork(4)
			net.AddFault(ringtest.Fault{From: 1, Kind: kind, Nth: 2, Action: ringtest.Corrupt})
			errs := allReduce(t, net, inputsFor(4, 1000, 1), rawOpts(1))
			if !net.Fired() {
				t.Fatal("fault did not fire")
			}
			sameError(t, errs, gradcodec.ErrBadFrame, "failed on rank 2")
			// The failure was not fatal: the ring is clean and usable.
			usableAgain(t, net, 2)
		})
	}
	noLeak(t, base)
}

func TestFaultNaN(t *testing.T) {
	base := runtime.NumGoroutine()
	for size := 2; size <= 5; size++ {
		net := ringtest.NewNetwork(size)
		in := inputsFor(size, 777, 3)
		bad := size - 1
		in[bad][500] = float32(math.NaN())
		errs := allReduce(t, net, in, rawOpts(1))
		sameError(t, errs, gradcodec.ErrNonFinite, fmt.Sprintf("failed on rank %d", bad))
	}
	noLeak(t, base)
}

func TestFaultTwoFailuresSameError(t *testing.T) {
	net := ringtest.NewNetwork(5)
	in := inputsFor(5, 900, 3)
	// Rank 1's NaN lies in chunk 1, which rank 1 encodes first, so it fails
	// whatever the timing; rank 3 meets its Inf (chunk 0) last.
	in[3][1] = float32(math.Inf(1))
	in[1][200] = float32(math.NaN())
	errs := allReduce(t, net, in, rawOpts(1))
	sameError(t, errs, gradcodec.ErrNonFinite, "failed on rank 1") // the lowest origin wins
}

func TestFaultLengthMismatch(t *testing.T) {
	base := runtime.NumGoroutine()
	net := ringtest.NewNetwork(4)
	in := inputsFor(4, 100, 3)
	in[2] = randData(9, 101)
	errs := allReduce(t, net, in, rawOpts(1))
	sameError(t, errs, ring.ErrShapeMismatch, "has 101 values")
	noLeak(t, base)
}

func TestFaultBadLayoutOneRank(t *testing.T) {
	net := ringtest.NewNetwork(3)
	in := inputsFor(3, 100, 3)
	errs := allReduce(t, net, in, func(rank int) ring.Options {
		o := ring.Options{Op: 1, Codec: &ringtest.RawCodec{}}
		if rank == 1 {
			o.Layout = []gradcodec.Shape{{Rows: 9, Cols: 10}}
		}
		return o
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "failed on rank 1") || !strings.Contains(err.Error(), "layout covers 90") {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

func TestFaultReplay(t *testing.T) {
	base := runtime.NumGoroutine()
	net := ringtest.NewNetwork(3)
	net.Record(true)
	if errs := allReduce(t, net, inputsFor(3, 500, 1), rawOpts(1)); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	net.Record(false)
	old := net.Sent(0)
	if len(old) == 0 || old[0].Op != 1 {
		t.Fatalf("recorded %v", old)
	}
	net.Enqueue(0, old[0]) // rank 1 sees op 1's first message again during op 2
	errs := allReduce(t, net, inputsFor(3, 500, 2), rawOpts(2))
	sameError(t, errs, ring.ErrProtocol, "of op 1")
	// The replay was rejected, not decoded; the ring is usable again.
	usableAgain(t, net, 3)
	noLeak(t, base)
}

func TestFaultLostRank(t *testing.T) {
	base := runtime.NumGoroutine()
	for _, nth := range []int{0, 3, 20} {
		net := ringtest.NewNetwork(5)
		net.AddFault(ringtest.Fault{From: 2, Nth: nth, Action: ringtest.CutSender})
		errs := allReduce(t, net, inputsFor(5, 3000, 1), rawOpts(1))
		if !net.Fired() {
			t.Fatalf("nth %d: fault did not fire", nth)
		}
		for r, err := range errs {
			if r == 2 {
				if err == nil {
					t.Fatal("the cut rank returned no error")
				}
				continue
			}
			var pl *ring.PeerLostError
			if !errors.Is(err, ring.ErrPeerLost) || !errors.As(err, &pl) || pl.Rank != 2 {
				t.Fatalf("nth %d rank %d: %v, want rank 2 lost", nth, r, err)
			}
		}
	}
	noLeak(t, base)
}

func TestFaultBrokenLink(t *testing.T) {
	base := runtime.NumGoroutine()
	net := ringtest.NewNetwork(4)
	net.AddFault(ringtest.Fault{From: 1, Nth: 5, Action: ringtest.Break})
	errs := allReduce(t, net, inputsFor(4, 3000, 1), rawOpts(1))
	for r, err := range errs {
		if !errors.Is(err, ring.ErrPeerLost) {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	noLeak(t, base)
}

// TestFaultDroppedMessage: a data message lost without the link failing
// shows as a gap in the sequence; a lost status token can only be caught by
// the deadline, and every rank must return by it, not hang.
func TestFaultDroppedMessage(t *testing.T) {
	base := runtime.NumGoroutine()
	net := ringtest.NewNetwork(4)
	net.AddFault(ringtest.Fault{From: 3, Kind: ring.KindAllGather, Nth: 1, Action: ringtest.Drop})
	errs := allReduce(t, net, inputsFor(4, 3000, 1), rawOpts(1))
	sameError(t, errs, ring.ErrProtocol, "expected allgather hop 0 chunk 0 sub 1 from rank 3")

	net = ringtest.NewNetwork(4)
	net.AddFault(ringtest.Fault{From: 3, Kind: ring.KindDone, Action: ringtest.Drop})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	in := inputsFor(4, 3000, 1)
	errs = runRanks(t, 4, func(_ context.Context, rank int) error {
		_, err := net.Ring(rank).AllReduce(ctx, in[rank], rawOpts(1)(rank))
		return err
	})
	timedOut := 0
	for r, err := range errs {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			timedOut++
		case err != nil:
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	if timedOut == 0 {
		t.Fatal("no rank noticed the lost token")
	}
	noLeak(t, base)
}

func TestCanceledRank(t *testing.T) {
	net := ringtest.NewNetwork(4)
	in := inputsFor(4, 3000, 1)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	errs := runRanks(t, 4, func(ctx context.Context, rank int) error {
		if rank == 2 {
			ctx = canceled
		}
		_, err := net.Ring(rank).AllReduce(ctx, in[rank], rawOpts(1)(rank))
		return err
	})
	sameError(t, errs, context.Canceled, "failed on rank 2")
}

func TestAllGatherBroadcastBarrier(t *testing.T) {
	base := runtime.NumGoroutine()
	for size := 1; size <= 8; size++ {
		net := ringtest.NewNetwork(size)
		op := uint64(0)
		// AllGather of slices of different lengths.
		outs := make([][][]byte, size)
		op++
		errs := runRanks(t, size, func(ctx context.Context, rank int) error {
			var err error
			outs[rank], err = net.Ring(rank).AllGather(ctx, op, []byte(strings.Repeat(fmt.Sprint(rank), rank)))
			return err
		})
		for r := range errs {
			if errs[r] != nil {
				t.Fatalf("size %d allgather rank %d: %v", size, r, errs[r])
			}
			for i, b := range outs[r] {
				if string(b) != strings.Repeat(fmt.Sprint(i), i) {
					t.Fatalf("size %d rank %d: out[%d] = %q", size, r, i, b)
				}
			}
		}
		for root := 0; root < size; root++ {
			op++
			got := make([][]byte, size)
			errs := runRanks(t, size, func(ctx context.Context, rank int) error {
				var data []byte
				if rank == root {
					data = []byte(fmt.Sprintf("from %d", root))
				}
				var err error
				got[rank], err = net.Ring(rank).Broadcast(ctx, op, data, root)
				return err
			})
			for r := range errs {
				if errs[r] != nil || string(got[r]) != fmt.Sprintf("from %d", root) {
					t.Fatalf("size %d broadcast root %d rank %d: %q %v", size, root, r, got[r], errs[r])
				}
			}
		}
		op++
		if errs := runRanks(t, size, func(ctx context.Context, rank int) error {
			return net.Ring(rank).Barrier(ctx, op)
		}); errors.Join(errs...) != nil {
			t.Fatalf("size %d barrier: %v", size, errs)
		}
	}
	// A bad root on one rank fails the broadcast everywhere.
	net := ringtest.NewNetwork(3)
	errs := runRanks(t, 3, func(ctx context.Context, rank int) error {
		root := 0
		if rank == 2 {
			root = 7
		}
		_, err := net.Ring(rank).Broadcast(ctx, 1, []byte("x"), root)
		return err
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "root 7") {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	noLeak(t, base)
}

// TestFaultRandomized injects one random fault per run (corrupt, cut a rank,
// break a link, refuse a send; on any message, tokens included) and checks that no rank
// hangs, no goroutine leaks, errors carry the right sentinel, and that a
// corrupted data frame fails every rank with the same error.
func TestFaultRandomized(t *testing.T) {
	base := runtime.NumGoroutine()
	rng := rand.New(rand.NewPCG(7, 7))
	runs := 200
	if testing.Short() {
		runs = 40
	}
	for i := 0; i < runs; i++ {
		size := 2 + rng.IntN(5)
		n := rng.IntN(2000)
		net := ringtest.NewNetwork(size)
		if rng.IntN(2) == 0 {
			net.SetCapacity(1 + rng.IntN(3))
		}
		f := ringtest.Fault{From: rng.IntN(size), Nth: rng.IntN(12),
			Action: []ringtest.Action{ringtest.Corrupt, ringtest.CutSender, ringtest.Break, ringtest.Refuse}[rng.IntN(4)]}
		if rng.IntN(2) == 0 {
			f.Kind = ring.Kind(1 + rng.IntN(5))
		}
		net.AddFault(f)
		t.Logf("run %d: size %d n %d fault %+v", i, size, n, f)
		in := inputsFor(size, n, uint64(i))
		errs := allReduce(t, net, in, func(int) ring.Options {
			return ring.Options{Op: 5, Codec: &ringtest.QuantCodec{}, SubChunkValues: 200}
		})
		desc := fmt.Sprintf("run %d: size %d n %d fault %+v fired %v: %v", i, size, n, f, net.Fired(), errs)
		if !net.Fired() {
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("%s: error without a fault", desc)
			}
			checkIdentical(t, in)
			continue
		}
		switch f.Action {
		case ringtest.Corrupt, ringtest.Refuse:
			if f.Action == ringtest.Corrupt && (f.Kind == ring.KindReduceScatter || f.Kind == ring.KindAllGather) {
				if n > 0 {
					sameError(t, errs, gradcodec.ErrBadFrame, "failed on rank")
				}
				continue
			}
			// A corrupted token or empty payload, a refused message:
			// anything but a hang or a silently wrong result.
			var ok []int
			for r, err := range errs {
				if err == nil {
					ok = append(ok, r)
				}
			}
			for _, r := range ok {
				if hash(in[r]) != hash(in[ok[0]]) {
					t.Fatalf("%s: successful ranks disagree", desc)
				}
			}
		default:
			for r, err := range errs {
				if err != nil && !errors.Is(err, ring.ErrPeerLost) {
					t.Fatalf("%s: rank %d: %v is not ErrPeerLost", desc, r, err)
				}
			}
		}
	}
	noLeak(t, base)
}

func TestSizeOneChecks(t *testing.T) {
	r := ringtest.NewNetwork(1).Ring(0)
	x := []float32{1, 2, float32(math.NaN())}
	if _, err := r.AllReduce(context.Background(), x, ring.Options{Op: 1}); !errors.Is(err, gradcodec.ErrNonFinite) {
		t.Fatalf("NaN on a ring of one: %v", err)
	}
	x[2] = 3
	if _, err := r.AllReduce(context.Background(), x, ring.Options{Op: 2, Average: true}); err != nil || x[2] != 3 {
		t.Fatalf("ring of one: %v %v", x, err)
	}
	if _, err := r.AllReduce(context.Background(), x, ring.Options{Op: 3, Layout: []gradcodec.Shape{{Rows: 2, Cols: 2}}}); err == nil {
		t.Fatal("bad layout accepted")
	}
	bad := &ring.Ring{Rank: 3, Size: 2}
	if _, err := bad.AllReduce(context.Background(), x, ring.Options{}); err == nil || !strings.Contains(err.Error(), "rank 3") {
		t.Fatalf("bad ring: %v", err)
	}
}

// TestStaleFatalAbort: a fatal abort left on a link by an earlier, failed
// collective fails the next one cleanly (every rank, same error) instead of
// confusing it, and the one after works.
func TestStaleFatalAbort(t *testing.T) {
	net := ringtest.NewNetwork(3)
	net.Record(true)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	// Rank 1 alone, with a canceled context, sends a fatal abort of op 4.
	if _, err := net.Ring(1).AllReduce(canceled, make([]float32, 10), rawOpts(4)(1)); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	sent := net.Sent(1)
	if len(sent) != 1 || sent[0].Kind != ring.KindAbort {
		t.Fatalf("rank 1 sent %v", sent)
	}
	net = ringtest.NewNetwork(3)
	net.Enqueue(1, sent[0])
	errs := allReduce(t, net, inputsFor(3, 100, 1), rawOpts(5))
	sameError(t, errs, ring.ErrProtocol, "abort message of op 4")
	usableAgain(t, net, 6)
}

// TestFaultRefusedSend: a link that refuses one message but stays up fails
// the collective on every rank through the status round, not as a lost peer.
func TestFaultRefusedSend(t *testing.T) {
	net := ringtest.NewNetwork(4)
	net.AddFault(ringtest.Fault{From: 2, Kind: ring.KindAllGather, Nth: 1, Action: ringtest.Refuse})
	errs := allReduce(t, net, inputsFor(4, 2000, 1), rawOpts(1))
	// Only the origin can match an error the ring has no code for; every
	// rank gets the same text.
	if !errors.Is(errs[2], ringtest.ErrRefused) {
		t.Fatalf("rank 2: %v", errs[2])
	}
	for r, err := range errs {
		if err == nil || err.Error() != errs[2].Error() || !strings.Contains(err.Error(), "failed on rank 2") ||
			!strings.Contains(err.Error(), "message refused") || errors.Is(err, ring.ErrPeerLost) {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}
