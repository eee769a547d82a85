package reliability

import (
	"strconv"
	"testing"
	"time"
)

// TestReliabilityMemoryFlat runs 1,000 consecutive h264 allreduces of mixed
// sizes on 4 ranks and compares each rank's resident memory after 100 and
// after 1,000 of them (after a GC that returns freed memory to the OS): a
// leak of FFmpeg frames, packets or codec contexts would grow it by
// megabytes. Every 100th result is compared across ranks (bit-identical).
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
			"VCCL_CODEC":     "h264",
			"RELY_STEPS":     strconv.Itoa(steps),
			"RELY_SHAPES":    "64x64,96x128,128x128,64x256,160x96,128x64",
			"RELY_RSS_EVERY": "100",
			"RELY_OP_EVERY":  "100",
			"RELY_MAX_NMSE":  "0.5",
		},
		peerTimeout: 10 * time.Second,
	})
	deadline := time.Now().Add(8 * time.Minute)
	rss := make([]map[int]int64, len(j.procs))
	hashes := map[int][]string{}
	for i, p := range j.procs {
		rss[i] = map[int]int64{}
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
		t.Logf("rank %d RSS: after 100 %d KiB, after %d %d KiB, growth %+d KiB (all: %v)", i, a, steps, b, growth, m)
		if a <= 0 || b <= 0 {
			t.Errorf("rank %d: missing RSS samples: %v", i, m)
		} else if growth > growthLimitKB {
			t.Errorf("rank %d: RSS grew by %d KiB between allreduce 100 and %d (limit %d KiB): leak", i, growth, steps, growthLimitKB)
		}
	}
	t.Logf("%d h264 allreduces on 4 ranks in %v", steps, time.Since(start).Round(time.Millisecond))
}
