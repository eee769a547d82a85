package reliability

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

var errPrefix = regexp.MustCompile(`^collective: rank \d+: (op \d+: )?`)

// TestReliabilityBadInput gives one rank of a 4-rank job a gradient of a
// different length, or one holding NaN or +Inf, with raw and h264. Every
// rank must fail with the same kind of error (ErrShapeMismatch or
// ErrNonFinite), the error must name the offending rank, and every process
// must exit promptly.
func TestReliabilityBadInput(t *testing.T) {
	type kind struct {
		name string
		env  string
		want string // event flag that must be set on every rank
	}
	kinds := []kind{
		{"length", "RELY_BAD_LEN_RANK", "shape"},
		{"nan", "RELY_NAN_RANK", "nonfinite"},
		{"inf", "RELY_INF_RANK", "nonfinite"},
	}
	for _, codec := range []string{"raw", "h264"} {
		for i, k := range kinds {
			bad := (i + 1) % 4 // vary the offender: 1, 2, 3
			if codec == "h264" {
				bad = (i + 2) % 4 // 2, 3, 0
			}
			t.Run(fmt.Sprintf("%s_%s_rank%d", codec, k.name, bad), func(t *testing.T) {
				t.Parallel()
				j := startJob(t, jobSpec{
					world: 4,
					role:  "allreduce",
					env: map[string]string{
						"VCCL_CODEC": codec,
						"RELY_STEPS": "2",
						"RELY_ROWS":  "128", "RELY_COLS": "256",
					},
					rankEnv:     map[int]map[string]string{bad: {k.env: strconv.Itoa(bad)}},
					peerTimeout: 5 * time.Second,
				})
				deadline := time.Now().Add(30 * time.Second)
				var classes []string
				for _, p := range j.procs {
					e, ok := j.waitEvent(p, "error", deadline)
					if !ok || e.Ev != "error" {
						t.Errorf("rank %d: no error (got %+v; events %+v)", p.rank, e, p.eventsSoFar())
						continue
					}
					flags := map[string]bool{"shape": e.Shape, "nonfinite": e.NonFinite, "peer_lost": e.PeerLost,
						"badframe": e.BadFrame, "protocol": e.Protocol}
					var set []string
					for f, v := range flags {
						if v {
							set = append(set, f)
						}
					}
					class := strings.Join(sortStrings(set), "+")
					classes = append(classes, class)
					if !flags[k.want] {
						t.Errorf("rank %d: error is not %s (flags %s): %s", p.rank, k.want, class, e.Err)
					}
					if e.Step != 0 {
						t.Errorf("rank %d: error at step %d, want the first allreduce (step 0)", p.rank, e.Step)
					}
					cause := errPrefix.ReplaceAllString(e.Err, "")
					if p.rank != bad && !strings.Contains(cause, fmt.Sprintf("rank %d", bad)) {
						t.Errorf("rank %d: error does not name the offending rank %d: %s", p.rank, bad, e.Err)
					}
					t.Logf("rank %d: %s", p.rank, e.Err)
				}
				for i := 1; i < len(classes); i++ {
					if classes[i] != classes[0] {
						t.Errorf("ranks disagree on the kind of error: %v", classes)
						break
					}
				}
				if hung := j.waitExit(time.Now().Add(15 * time.Second)); len(hung) > 0 {
					t.Errorf("ranks %v hung after the error", hung)
				}
				t.Logf("timeline:\n%s", j.timeline())
			})
		}
	}
}

func sortStrings(s []string) []string {
	sort.Strings(s)
	return s
}
