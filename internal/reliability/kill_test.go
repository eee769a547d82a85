package reliability

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultTrial is one job in which one rank crashes, stalls or loses its link.
type faultTrial struct {
	world       int
	victim      int
	phase       string // "before", "reduce-scatter" or "allgather": where the fault is aimed
	codec       string
	rows, cols  int
	frac        float64 // fraction of the calibration step's bytes written when the fault hits
	killStep    int
	peerTimeout time.Duration
	env         map[string]string // extra variables for the victim
	stall       bool              // the victim does not exit by itself (SIGSTOP, cut link)
	wrap        func(rank int) ([]string, string)
	joinAddr    string
}

// trialResult is what one trial measured.
type trialResult struct {
	phase      string        // where the fault actually hit, as the victim reported it
	frac       float64       // bytes written when it hit / bytes of a whole allreduce
	detect     time.Duration // slowest survivor: fault → error returned
	survivors  int
	victimExit string
}

// runFaultTrial runs one trial and checks the survivors' errors: each must
// wrap ErrPeerLost naming the victim within peerTimeout plus slack, close
// without leaking goroutines and exit; nobody may hang.
func runFaultTrial(t *testing.T, ft faultTrial) trialResult {
	t.Helper()
	steps := ft.killStep + 3
	victimEnv := map[string]string{
		"RELY_KILL_FRAC": strconv.FormatFloat(ft.frac, 'f', 3, 64),
	}
	for k, v := range ft.env {
		victimEnv[k] = v
	}
	j := startJob(t, jobSpec{
		world: ft.world,
		role:  "allreduce",
		env: map[string]string{
			"VCCL_CODEC":     ft.codec,
			"RELY_STEPS":     strconv.Itoa(steps),
			"RELY_ROWS":      strconv.Itoa(ft.rows),
			"RELY_COLS":      strconv.Itoa(ft.cols),
			"RELY_VICTIM":    strconv.Itoa(ft.victim),
			"RELY_KILL_STEP": strconv.Itoa(ft.killStep),
		},
		rankEnv:     map[int]map[string]string{ft.victim: victimEnv},
		peerTimeout: ft.peerTimeout,
		wrap:        ft.wrap,
		joinAddr:    ft.joinAddr,
	})
	// The bound the survivors are held to: the peer timeout plus slack for
	// a 2-core machine running four ranks (and other tests).
	bound := ft.peerTimeout + 3*time.Second
	deadline := time.Now().Add(60*time.Second + bound)

	res := trialResult{}
	vp := j.procs[ft.victim]
	dying, ok := j.waitEvent(vp, "dying", deadline)
	if !ok || dying.Ev != "dying" {
		vp := j.procs[ft.victim]
		t.Fatalf("victim rank %d never reached its fault (last event %+v, events %+v)", ft.victim, dying, vp.eventsSoFar())
	}
	res.phase, res.frac = dying.Phase, dying.Frac
	faultAt := time.Unix(0, dying.TNS)

	var slowest time.Duration
	for _, p := range j.procs {
		if p.rank == ft.victim {
			continue
		}
		e, ok := j.waitEvent(p, "error", time.Now().Add(bound+10*time.Second))
		switch {
		case !ok:
			t.Errorf("rank %d: no error within %v of rank %d's fault (%s): hung; events %+v",
				p.rank, bound+10*time.Second, ft.victim, res.phase, p.eventsSoFar())
			continue
		case e.Ev != "error":
			t.Errorf("rank %d: got %+v, want an error event", p.rank, e)
			continue
		}
		res.survivors++
		lat := time.Unix(0, e.TNS).Sub(faultAt)
		if lat > slowest {
			slowest = lat
		}
		named := e.Lost == ft.victim || strings.Contains(e.Err, fmt.Sprintf("rank %d lost", ft.victim))
		if !e.PeerLost || !named {
			t.Errorf("rank %d: error does not name lost rank %d as a lost peer (errors.Is ErrPeerLost %v, PeerLostError.Rank %d): %s",
				p.rank, ft.victim, e.PeerLost, e.Lost, e.Err)
		}
		if lat > bound {
			t.Errorf("rank %d: error came %v after the fault, bound %v (peer timeout %v)", p.rank, lat, bound, ft.peerTimeout)
		}
		c, ok := j.waitEvent(p, "closed", time.Now().Add(10*time.Second))
		if !ok || c.Ev != "closed" {
			t.Errorf("rank %d: Close did not return (last event %+v)", p.rank, c)
		} else if c.Leaked {
			t.Errorf("rank %d: %d goroutines after Close, %d before Init (stacks in its stderr)", p.rank, c.Goroutines, c.Base)
		}
	}
	res.detect = slowest
	if ft.stall {
		// A stopped or cut-off victim is the test's to end.
		syscall.Kill(-vp.cmd.Process.Pid, syscall.SIGKILL)
	}
	if hung := j.waitExit(time.Now().Add(15 * time.Second)); len(hung) > 0 {
		t.Errorf("ranks %v did not exit within 15s of the survivors' errors", hung)
	}
	for _, p := range j.procs {
		if p.rank == ft.victim {
			res.victimExit = p.exitDesc()
			continue
		}
		if code := p.state.ExitCode(); code != 3 {
			t.Errorf("rank %d exited %s, want exit 3 (handled error)", p.rank, p.exitDesc())
		}
	}
	return res
}

// trialSeed returns a seed for the random fault points, logged so that a
// failure can be replayed with RELY_SEED.
func trialSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("RELY_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("RELY_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("seed %d (replay with RELY_SEED=%d)", seed, seed)
	return seed
}

// randomFault picks the i-th trial's fault: phases in turn, a random victim,
// a random point inside the phase.
func randomFault(rng *rand.Rand, i, world int) (phase string, victim int, frac float64, step int) {
	victim = rng.IntN(world)
	switch i % 3 {
	case 0:
		return "before", victim, -1, rng.IntN(2) // before the first or the second allreduce
	case 1:
		return "reduce-scatter", victim, 0.05 + 0.4*rng.Float64(), 1
	default:
		return "allgather", victim, 0.55 + 0.35*rng.Float64(), 1
	}
}

// summarize logs a table of trials by phase.
func summarize(t *testing.T, what string, results []trialResult) {
	byPhase := map[string][]trialResult{}
	for _, r := range results {
		byPhase[r.phase] = append(byPhase[r.phase], r)
	}
	phases := make([]string, 0, len(byPhase))
	for p := range byPhase {
		phases = append(phases, p)
	}
	sort.Strings(phases)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d trials\n", what, len(results))
	for _, p := range phases {
		rs := byPhase[p]
		var maxD, sumD time.Duration
		for _, r := range rs {
			sumD += r.detect
			if r.detect > maxD {
				maxD = r.detect
			}
		}
		fmt.Fprintf(&b, "  %-15s %2d trials, survivors' error after fault: mean %v, max %v\n",
			p, len(rs), (sumD / time.Duration(len(rs))).Round(time.Millisecond), maxD.Round(time.Millisecond))
	}
	t.Log(b.String())
}

// TestReliabilityKillRank kills one rank of a 4-rank job 20 times, at random
// points: before an allreduce, during reduce-scatter and during allgather
// (by the share of the allreduce's bytes the victim has written). Most trials
// use raw fp32, every fourth h264.
func TestReliabilityKillRank(t *testing.T) {
	trials := 20
	if testing.Short() {
		trials = 6
	}
	rng := rand.New(rand.NewPCG(trialSeed(t), 1))
	var mu sync.Mutex
	var results []trialResult
	// Two trials at a time (go test's -parallel defaults to GOMAXPROCS):
	// a trial mostly waits for processes to start.
	t.Run("trials", func(t *testing.T) {
		for i := 0; i < trials; i++ {
			phase, victim, frac, step := randomFault(rng, i, 4)
			codec, rows, cols := "raw", 512, 1024
			if i%4 == 3 {
				codec, rows, cols = "h264", 256, 512
				if frac > 0.85 {
					frac = 0.85 // h264 frames vary in size from step to step
				}
			}
			name := fmt.Sprintf("%02d_%s_rank%d_%s", i, phase, victim, codec)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				r := runFaultTrial(t, faultTrial{
					world: 4, victim: victim, phase: phase, codec: codec, rows: rows, cols: cols,
					frac: frac, killStep: step, peerTimeout: 5 * time.Second,
				})
				if r.victimExit != "killed by killed" {
					t.Errorf("victim rank %d: %s, want killed by SIGKILL", victim, r.victimExit)
				}
				t.Logf("aimed at %s (frac %.2f), hit %s (frac %.2f); slowest survivor error %v after the kill",
					phase, frac, r.phase, r.frac, r.detect.Round(time.Millisecond))
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
		}
	})
	summarize(t, "kill a rank", results)
}
