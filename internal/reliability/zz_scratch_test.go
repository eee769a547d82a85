package reliability

import (
	"testing"
	"time"
)

func TestScratchInit(t *testing.T) {
	for i := 0; i < 12; i++ {
		j := startJob(t, jobSpec{world: 4, role: "allreduce", env: map[string]string{"VCCL_CODEC": "raw", "RELY_STEPS": "1", "RELY_ROWS": "8", "RELY_COLS": "8"}})
		j.waitExit(time.Now().Add(60 * time.Second))
		t.Logf("job %d: %v\n%s", i, time.Since(j.start), j.timeline())
		for _, p := range j.procs {
			if d := p.exitDesc(); d != "exit 0" {
				t.Logf("rank %d %s: %s", p.rank, d, p.stderr.String())
			}
		}
		if time.Since(j.start) > 10*time.Second {
			for _, p := range j.procs {
				t.Logf("rank %d stderr: %s", p.rank, p.stderr.String())
			}
		}
	}
}
