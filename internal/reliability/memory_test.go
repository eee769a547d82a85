package reliability

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// TestReliabilityMemoryFlat runs 1,000 consecutive h264 allreduces of mixed
// sizes on 4 ranks and compares each rank's resident memory after 100 and
// after 1,000 of them (after a GC that returns freed memory to the OS): a
// leak of FFmpeg frames, packets or codec contexts would grow it by
// megabytes. Every 100th result is compared across ranks (bit-identical).
// arenaMax is MALLOC_ARENA_MAX for the ranks: 2 unless RELY_ARENA says
// otherwise ("0" leaves glibc's default).
func arenaMax() string {
	if v := os.Getenv("RELY_ARENA"); v != "" && v != "0" {
		return v
	} else if v == "0" {
		return ""
	}
	return "2"
}

func TestReliabilityMemoryFlat(t *testing.T) {
	steps := 1000
	if testing.Short() {
		steps = 300
	}
	const growthLimitKB = 8 * 1024
	start := time.Now()
	j := startJob(t, jobSpec{
		world: 4,
		role:  "allreduce",
		env: map[string]string{
			"VCCL_CODEC":       "h264",
			"RELY_STEPS":       strconv.Itoa(steps),
			"RELY_SHAPES":      "64x64,96x128,128x128,64x256,160x96,128x64",
			"RELY_RSS_EVERY":   "100",
			"RELY_OP_EVERY":    "100",
			"RELY_MAX_NMSE":    "0.5",
			// glibc gives every thread that mallocs its own arena, and
			// x264's worker threads touch new ones for a while: that
			// growth (10-18 MiB over 900 allreduces here, slowing down)
			// is allocator warm-up, not a leak, and would hide one. Two
			// arenas keep RSS a measure of what is really held.
			"MALLOC_ARENA_MAX": arenaMax(),
			"MALLOC_MMAP_THRESHOLD_": os.Getenv("RELY_MMAP"),
		},
		peerTimeout: 10 * time.Second,
	})
	deadline := time.Now().Add(8 * time.Minute)
	rss := make([]map[int]int64, len(j.procs))
	heap := make([]map[int]int64, len(j.procs))
	hashes := map[int][]string{}
	for i, p := range j.procs {
		rss[i] = map[int]int64{}
		heap[i] = map[int]int64{}
		for {
			e, ok := j.next(p, deadline)
			if !ok {
				t.Fatalf("rank %d: output ended or timed out before done (events %+v)", p.rank, p.eventsSoFar())
			}
			if e.Ev == "error" || e.Ev == "wrong" {
				t.Fatalf("rank %d: %+v", p.rank, e)
			}
			if e.Ev == "rss" {
				rss[i][e.Step] = e.RSSKB
				heap[i][e.Step] = e.HeapKB
			}
			if e.Ev == "op" {
				hashes[e.Step] = append(hashes[e.Step], e.Hash)
			}
			if e.Ev == "closed" {
				if e.Leaked {
					t.Errorf("rank %d: goroutines leaked after Close: %d > %d", p.rank, e.Goroutines, e.Base)
				}
				break
			}
		}
	}
	if hung := j.waitExit(time.Now().Add(15 * time.Second)); len(hung) > 0 {
		t.Errorf("ranks %v did not exit", hung)
	}
	for step, hs := range hashes {
		for _, h := range hs[1:] {
			if h != hs[0] {
				t.Errorf("step %d: ranks hold different results: %v", step, hs)
				break
			}
		}
	}
	for i, m := range rss {
		a, b := m[100], m[steps]
		growth := b - a
		t.Logf("rank %d RSS: after 100 %d KiB, after %d %d KiB, growth %+d KiB (RSS by step %v; Go heap in use by step %v)",
			i, a, steps, b, growth, m, heap[i])
		if a <= 0 || b <= 0 {
			t.Errorf("rank %d: missing RSS samples: %v", i, m)
		} else if growth > growthLimitKB {
			t.Errorf("rank %d: RSS grew by %d KiB between allreduce 100 and %d (limit %d KiB): leak", i, growth, steps, growthLimitKB)
		}
	}
	t.Logf("%d h264 allreduces on 4 ranks in %v", steps, time.Since(start).Round(time.Millisecond))
}
