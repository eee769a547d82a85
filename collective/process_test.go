package collective

// Integration tests with real worker processes: the test binary re-executes
// itself with the VCCL_* environment the launcher would set, and each child
// runs one scenario (childMain) and reports on stdout.

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vccl/vccl/internal/metric"
	"github.com/vccl/vccl/internal/testenv"
	"github.com/vccl/vccl/worker"
)

const envChild = "VCCL_COLLECTIVE_TEST_CHILD"

func TestMain(m *testing.M) { testenv.Main(m, envChild, childMain) }

// report is one line a child prints: "REPORT <json>".
type report struct {
	Rank     int     `json:"rank"`
	Kind     string  `json:"kind"` // "result", "progress", "error", "done"
	Case     string  `json:"case,omitempty"`
	Hash     uint64  `json:"hash,omitempty"`
	NMSE     float64 `json:"nmse,omitempty"`
	BPV      float64 `json:"bpv,omitempty"`
	Step     int     `json:"step,omitempty"`
	Err      string  `json:"err,omitempty"`
	PeerLost bool    `json:"peer_lost,omitempty"`
	Lost     int     `json:"lost,omitempty"`
	Same     bool    `json:"same,omitempty"` // AllGather of hashes agreed
}

// allreduceCases are the allreduces of the "allreduce" scenario.
var allreduceCases = []struct {
	name       string
	codec      string
	rows, cols int
	maxNMSE    float64

	shaped bool // pass the shape (else a flat buffer)
}{
	{"raw-odd", "raw", 1, 100003, 1e-12, false},
	{"raw-2d", "raw", 300, 301, 1e-12, true},
	{"lossy-2d", lossyCodec, 512, 512, 0.05, true},
	{"lossy-flat", lossyCodec, 400, 500, 0.05, false},
}

// caseData is rank r's input of case i: Gaussian for raw, gradient-like
// (smooth, nearly low rank) for the video codecs.
func caseData(i, r int) []float32 {
	tc := allreduceCases[i]
	if tc.codec == "raw" {
		return rankData(int64(100+i), r, tc.rows*tc.cols)
	}
	return rankSmooth(int64(100+i), r, tc.rows, tc.cols)
}

func childMain(mode string) int {
	rank, _ := strconv.Atoi(os.Getenv(worker.EnvRank))
	out := json.NewEncoder(os.Stdout)
	emit := func(r report) {
		r.Rank = rank
		fmt.Print("REPORT ")
		out.Encode(r)
	}
	fail := func(err error) int {
		var pl *PeerLostError
		r := report{Kind: "error", Err: err.Error(), PeerLost: errors.Is(err, ErrPeerLost), Lost: -1}
		if errors.As(err, &pl) {
			r.Lost = pl.Rank
		}
		emit(r)
		// Stay in the job until the parent has every rank's report (it
		// closes stdin): a rank that leaves at once would be reported lost
		// by its neighbours before they hear of the first loss.
		io.Copy(io.Discard, os.Stdin)
		return 1
	}
	ctx := context.Background()
	c, err := InitFromEnv(ctx)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	switch mode {
	case "allreduce":
		for i, tc := range allreduceCases {
			x := caseData(i, c.Rank())
			opts := []Option{WithCodec(tc.codec), WithStream(tc.name)}
			if tc.shaped {
				opts = append(opts, WithShape(tc.rows, tc.cols))
			}
			st, err := c.AllReduce(ctx, x, opts...)
			if err != nil {
				return fail(err)
			}
			h := hashOf(x)
			parts, err := c.AllGather(ctx, []byte(strconv.FormatUint(h, 16)))
			if err != nil {
				return fail(err)
			}
			same := true
			for _, p := range parts {
				same = same && string(p) == string(parts[0])
			}
			emit(report{Kind: "result", Case: tc.name, Hash: h, NMSE: metric.NMSE(x, exactSumOf(c.Size(), func(r int) []float32 { return caseData(i, r) }, false)), BPV: st.BitsPerValue(), Same: same})
		}
	case "loop":
		// Allreduce until something fails; the parent kills a rank.
		for step := 1; ; step++ {
			x := rankData(int64(step), c.Rank(), 50000)
			if _, err := c.AllReduce(ctx, x, WithCodec("raw")); err != nil {
				return fail(err)
			}
			emit(report{Kind: "progress", Step: step})
		}
	default:
		return fail(fmt.Errorf("unknown child mode %q", mode))
	}
	if err := c.Barrier(ctx); err != nil {
		return fail(err)
	}
	emit(report{Kind: "done"})
	return 0
}

// procJob is a job of child processes.
type procJob struct {
	t       *testing.T
	cmds    []*exec.Cmd
	stdins  []io.WriteCloser
	reports chan report
	quit    chan struct{}
	wg      sync.WaitGroup
	stderr  []*strings.Builder
	mu      sync.Mutex
}

// worldEnv returns the environment of every rank of a job.
func worldEnv(t *testing.T, size int, secret []byte, peerTimeout string, extra ...string) [][]string {
	port := testenv.FreePort(t, "127.0.0.1")
	envs := make([][]string, size)
	for r := range envs {
		env := []string{
			worker.EnvRank + "=" + strconv.Itoa(r),
			worker.EnvWorldSize + "=" + strconv.Itoa(size),
			worker.EnvSecret + "=" + hex.EncodeToString(secret),
			worker.EnvBindAddr + "=127.0.0.1",
			worker.EnvPeerTimeout + "=" + peerTimeout,
			worker.EnvJoinTimeout + "=30s",
			worker.EnvBPV + "=1.4",
			EnvWarmupSteps + "=0",
		}
		if r == 0 {
			env = append(env, worker.EnvBindPort+"="+strconv.Itoa(port))
		} else {
			env = append(env, worker.EnvJoin+"=127.0.0.1:"+strconv.Itoa(port))
		}
		envs[r] = append(env, extra...)
	}
	return envs
}

func startJob(t *testing.T, mode string, envs [][]string) *procJob {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	j := &procJob{t: t, reports: make(chan report, 1000), quit: make(chan struct{})}
	for r, env := range envs {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), append(env, envChild+"="+mode)...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		j.stdins = append(j.stdins, stdin)
		var sb strings.Builder
		cmd.Stderr = &lockedWriter{mu: &j.mu, w: &sb}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		j.cmds = append(j.cmds, cmd)
		j.stderr = append(j.stderr, &sb)
		j.wg.Add(1)
		go func() {
			defer j.wg.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line, ok := strings.CutPrefix(sc.Text(), "REPORT ")
				if !ok {
					continue
				}
				var rep report
				if err := json.Unmarshal([]byte(line), &rep); err != nil {
					rep = report{Rank: r, Kind: "error", Err: "bad report: " + line}
				}
				select {
				case j.reports <- rep:
				case <-j.quit:
					return
				}
			}
		}()
	}
	t.Cleanup(j.stop)
	return j
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// release closes the children's stdin: a child that failed may exit now.
func (j *procJob) release() {
	for _, in := range j.stdins {
		in.Close()
	}
}

// stop kills what is left and waits for every child and reader.
func (j *procJob) stop() {
	j.release()
	close(j.quit)
	for _, c := range j.cmds {
		if c.ProcessState == nil {
			c.Process.Kill()
		}
	}
	j.wg.Wait()
	for _, c := range j.cmds {
		if c.ProcessState == nil {
			c.Wait()
		}
	}
	if j.t.Failed() {
		j.mu.Lock()
		for r, sb := range j.stderr {
			j.t.Logf("rank %d stderr:\n%s", r, testenv.Tail(sb.String(), 3000))
		}
		j.mu.Unlock()
	}
}

// next returns the next report or fails the test after timeout.
func (j *procJob) next(timeout time.Duration) report {
	j.t.Helper()
	select {
	case r := <-j.reports:
		return r
	case <-time.After(timeout):
		j.t.Fatalf("no report from the workers within %v", timeout)
		return report{}
	}
}

func TestProcessesAllReduce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 processes and runs h264")
	}
	const size = 4
	j := startJob(t, "allreduce", worldEnv(t, size, []byte("integration-secret"), "10s"))
	results := map[string][]report{}
	done := 0
	for done < size {
		r := j.next(90 * time.Second)
		switch r.Kind {
		case "error":
			t.Fatalf("rank %d: %s", r.Rank, r.Err)
		case "result":
			results[r.Case] = append(results[r.Case], r)
		case "done":
			done++
		}
	}
	for _, tc := range allreduceCases {
		rs := results[tc.name]
		if len(rs) != size {
			t.Fatalf("%s: %d results, want %d", tc.name, len(rs), size)
		}
		for _, r := range rs {
			if r.Hash != rs[0].Hash || !r.Same {
				t.Errorf("%s: rank %d hash %x differs from rank %d's %x", tc.name, r.Rank, r.Hash, rs[0].Rank, rs[0].Hash)
			}
			if r.NMSE > tc.maxNMSE {
				t.Errorf("%s: rank %d NMSE %g > %g", tc.name, r.Rank, r.NMSE, tc.maxNMSE)
			}
		}
		t.Logf("%s: NMSE %.3g, %.3f bits/value on the wire", tc.name, rs[0].NMSE, rs[0].BPV)
	}
	for r, c := range j.cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("rank %d exited: %v", r, err)
		}
	}
}

func TestProcessKilledRankIsNamed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 processes")
	}
	const size, victim = 4, 2
	const peerTimeout = 5 * time.Second
	j := startJob(t, "loop", worldEnv(t, size, []byte("kill-secret"), peerTimeout.String()))
	steps := make([]int, size)
	for {
		r := j.next(60 * time.Second)
		if r.Kind == "error" {
			t.Fatalf("rank %d failed before the kill: %s", r.Rank, r.Err)
		}
		if r.Kind == "progress" {
			steps[r.Rank] = r.Step
		}
		if min(steps[0], steps[1], steps[2], steps[3]) >= 3 {
			break
		}
	}
	if err := j.cmds[victim].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	bound := peerTimeout + 5*time.Second // detection bound plus slack for a loaded 2-core machine
	failed := map[int]bool{}
	for len(failed) < size-1 {
		r := j.next(2 * bound)
		if r.Kind != "error" {
			continue
		}
		took := time.Since(killed)
		t.Logf("rank %d failed after %v: %s", r.Rank, took.Round(time.Millisecond), r.Err)
		if r.Rank == victim {
			t.Fatalf("the killed rank reported")
		}
		if !r.PeerLost || r.Lost != victim || !strings.Contains(r.Err, fmt.Sprintf("rank %d", victim)) {
			t.Errorf("rank %d: error %q does not name lost rank %d (lost=%d)", r.Rank, r.Err, victim, r.Lost)
		}
		if took > bound {
			t.Errorf("rank %d took %v to fail, bound %v", r.Rank, took, bound)
		}
		failed[r.Rank] = true
	}
	j.release()
	for r, c := range j.cmds {
		if r == victim {
			continue
		}
		if err := c.Wait(); err == nil {
			t.Errorf("rank %d exited 0 after losing rank %d", r, victim)
		}
	}
}
