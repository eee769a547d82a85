package reliability

import (
	"strings"
	"testing"
	"time"
)

// TestReliabilityAbsentRank: a rank that is alive (its process runs, its
// links answer) but never enters an allreduce. The peer timeout cannot see
// it; the collective timeout (VCCL_TIMEOUT, 3 s here) must end the
// allreduce on every other rank with the same error naming the absent rank,
// within the timeout plus the grace a rank may spend passing the error on.
// The absent rank then enters late and must not hang either.
func TestReliabilityAbsentRank(t *testing.T) {
	const (
		world   = 4
		absent  = 2
		step    = 1
		timeout = 3 * time.Second
		// A rank may wait up to AbortGrace (2 s) to pass the error to a
		// neighbour that does not read; then scheduling slack.
		bound = timeout + 2*time.Second + 2*time.Second
	)
	j := startJob(t, jobSpec{
		world: world,
		role:  "allreduce",
		env: map[string]string{
			"VCCL_CODEC":       "raw",
			"VCCL_TIMEOUT":     timeout.String(),
			"RELY_STEPS":       "3",
			"RELY_ROWS":        "256",
			"RELY_COLS":        "512",
			"RELY_ABSENT_RANK": "2",
			"RELY_ABSENT_STEP": "1",
		},
		// Far beyond the collective timeout: the error must come from the
		// timeout, not from failure detection.
		peerTimeout: 20 * time.Second,
	})
	deadline := time.Now().Add(60 * time.Second)
	if e, ok := j.waitEvent(j.procs[absent], "absent", deadline); !ok || e.Ev != "absent" {
		t.Fatalf("rank %d did not reach its absent step: %+v", absent, e)
	}
	var text string
	for _, p := range j.procs {
		if p.rank == absent {
			continue
		}
		e, ok := j.waitEvent(p, "error", deadline)
		if !ok || e.Ev != "error" {
			t.Fatalf("rank %d: no error event (got %+v, ok %v)", p.rank, e, ok)
		}
		took := time.Duration(e.ElapsedNS)
		t.Logf("rank %d failed step %d after %v: %s", p.rank, e.Step, took.Round(time.Millisecond), e.Err)
		if e.Step != step || !e.Timeout || e.Absent != absent || e.PeerLost ||
			!strings.Contains(e.Err, "rank 2 never entered the collective") {
			t.Errorf("rank %d: %+v, want a timeout naming rank %d at step %d", p.rank, e, absent, step)
		}
		// A rank that entered after the one that reports the absent rank
		// gets the error a little before its own timeout.
		if early := timeout - time.Second; took < early || took > bound {
			t.Errorf("rank %d failed after %v, want within [%v, %v]", p.rank, took, early, bound)
		}
		// The same error on every rank, past the "collective: rank R: op
		// N: allreduce: " prefix that names the reporting rank.
		_, cause, _ := strings.Cut(e.Err, "allreduce: ")
		if text == "" {
			text = cause
		} else if cause != text {
			t.Errorf("rank %d error differs:\n%s\n%s", p.rank, cause, text)
		}
	}
	// Let the absent rank go on: it enters the allreduce late and fails
	// (the others have gone) instead of hanging.
	j.procs[absent].stdin.Close()
	if e, ok := j.waitEvent(j.procs[absent], "error", time.Now().Add(30*time.Second)); !ok {
		t.Errorf("the absent rank, entering late, did not fail: %+v", e)
	} else {
		t.Logf("absent rank, entering late: %s", e.Err)
	}
	if hung := j.waitExit(time.Now().Add(30 * time.Second)); len(hung) > 0 {
		t.Errorf("ranks %v did not exit", hung)
	}
}
