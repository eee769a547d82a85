package reliability

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vccl/vccl/gradcodec"
	"github.com/vccl/vccl/ring"
	"github.com/vccl/vccl/worker"
)

// childLate is a rank of RELY_STEPS raw allreduces of RELY_ROWS×RELY_COLS
// values over the worker's links; rank RELY_LATE enters the second one
// RELY_LATE_MS late. Before and after that wait it reads its live heap
// after a GC ("late" event, bytes = how much the live heap grew while it was
// away: what its links buffered).
func childLate() int {
	rank := envInt("VCCL_RANK", -1)
	world := envInt("VCCL_RELIABILITY_WORLD", 0)
	steps := envInt("RELY_STEPS", 2)
	rows, cols := envInt("RELY_ROWS", 128), envInt("RELY_COLS", 256)
	late := envInt("RELY_LATE", -1)
	lateFor := time.Duration(envInt("RELY_LATE_MS", 0)) * time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := worker.ConfigFromEnv()
	if err != nil {
		emit(map[string]any{"ev": "init_error", "err": err.Error()})
		return 3
	}
	w, err := worker.Start(ctx, cfg)
	if err != nil {
		emit(map[string]any{"ev": "init_error", "err": err.Error()})
		return 3
	}
	defer w.Close()
	opts := gradcodec.DefaultOptions()
	opts.Codec = "raw"
	codec, err := ring.NewGradCodec(opts, false)
	if err != nil {
		emit(map[string]any{"ev": "init_error", "err": err.Error()})
		return 3
	}
	defer codec.Close()
	r := &ring.Ring{Rank: w.Rank(), Size: w.Size(), Next: w.Next(), Prev: w.Prev()}
	emit(map[string]any{"ev": "ready"})
	x, want := make([]float32, rows*cols), make([]float32, rows*cols)
	var ms runtime.MemStats
	for s := 0; s < steps; s++ {
		fillInput(x, want, rank, s, world)
		if s == 1 && rank == late {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			heap0 := int64(ms.HeapAlloc)
			time.Sleep(lateFor)
			runtime.GC()
			runtime.ReadMemStats(&ms)
			emit(map[string]any{"ev": "late", "step": s, "bytes": int64(ms.HeapAlloc) - heap0, "heap_kb": ms.HeapInuse >> 10})
		}
		start := time.Now()
		_, err := r.AllReduce(ctx, x, ring.Options{Op: uint64(s + 1), Codec: codec, Stream: "t"})
		if err != nil {
			emit(errorEvent(s, err, time.Since(start)))
			return 3
		}
		exact := true
		for i := range want {
			if x[i] != want[i] {
				exact = false
				break
			}
		}
		emit(map[string]any{"ev": "op", "step": s, "hash": hashFloats(x), "exact": exact, "elapsed_ns": time.Since(start).Nanoseconds()})
	}
	emit(map[string]any{"ev": "done"})
	return 0
}

// TestReliabilityBackpressure: a rank that enters an allreduce 1.5 peer
// timeouts after its predecessor has started sending 16 MiB to it (more than
// the sockets hold). The predecessor must wait — slowed down by the link,
// not failed as a lost peer — and the late rank must not have buffered what
// was sent while it was away (its live heap grows by under 4 MiB in that
// time — two 1 MiB frames may be read ahead — against 16 MiB sent); the allreduce then completes, exact and
// identical on every rank.
func TestReliabilityBackpressure(t *testing.T) {
	const world, late, rows, cols = 3, 1, 2048, 6144 // 48 MiB: 16 MiB per ring chunk
	peerTimeout := 3 * time.Second
	lateFor := peerTimeout * 3 / 2
	j := startJob(t, jobSpec{
		world: world,
		role:  "late",
		env: map[string]string{
			"RELY_STEPS":   "2",
			"RELY_ROWS":    strconv.Itoa(rows),
			"RELY_COLS":    strconv.Itoa(cols),
			"RELY_LATE":    strconv.Itoa(late),
			"RELY_LATE_MS": strconv.Itoa(int(lateFor.Milliseconds())),
		},
		peerTimeout: peerTimeout,
	})
	deadline := time.Now().Add(60 * time.Second)
	hashes := map[int]string{}
	for _, p := range j.procs {
		for {
			e, ok := j.next(p, deadline)
			if !ok {
				break
			}
			switch e.Ev {
			case "init_error", "error":
				t.Errorf("rank %d: %s", p.rank, e.Err)
			case "late":
				t.Logf("rank %d was away %v: its live heap grew by %d KiB meanwhile (in use %d KiB)", p.rank, lateFor, e.Bytes>>10, e.HeapKB)
				if e.Bytes > 4<<20 { // two 1 MiB frames may be read ahead
					t.Errorf("rank %d's live heap grew by %d bytes while it was not receiving: the link buffered what its predecessor sent", p.rank, e.Bytes)
				}
			case "op":
				if !e.Exact {
					t.Errorf("rank %d step %d: result not exact", p.rank, e.Step)
				}
				if e.Step == 1 {
					hashes[p.rank] = e.Hash
					t.Logf("rank %d: allreduce 2 took %v", p.rank, time.Duration(e.ElapsedNS).Round(time.Millisecond))
				}
			}
		}
	}
	for r := 1; r < world; r++ {
		if hashes[r] == "" || hashes[r] != hashes[0] {
			t.Errorf("allreduce 2: ranks disagree or a rank is missing: %v", hashes)
			break
		}
	}
	if hung := j.waitExit(time.Now().Add(15 * time.Second)); len(hung) > 0 {
		t.Errorf("ranks %v hung", hung)
	}
	if os.Getenv("RELY_TIMELINE") != "" {
		t.Logf("timeline:\n%s", j.timeline())
	}
}
