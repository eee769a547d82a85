package worker

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vccl/vccl/internal/testenv"
	"github.com/vccl/vccl/ring"
)

// envChild selects the child mode of a re-executed test binary.
const envChild = "VCCL_WORKER_TEST_CHILD"

func TestMain(m *testing.M) { testenv.Main(m, envChild, childMain) }

// childMain is one rank of a multi-process test. It reports on stdout, one
// line per event: READY, OK, LOST <rank> <error>, ERR <error>.
func childMain(mode string) int {
	cfg, err := ConfigFromEnv()
	if err != nil {
		fmt.Printf("ERR %v\n", err)
		return 2
	}
	w, err := Start(context.Background(), cfg)
	if err != nil {
		fmt.Printf("ERR %v\n", oneLine(err))
		return 1
	}
	defer w.Close()
	fmt.Println("READY")
	ctx := context.Background()
	prev := (cfg.Rank - 1 + cfg.WorldSize) % cfg.WorldSize
	switch mode {
	case "ring":
		for op := range uint64(4) {
			for _, n := range []int{0, 3, 70000, 1<<20 + 3} {
				if err := w.Next().Send(ctx, testMsg(cfg.Rank, op, n)); err != nil {
					fmt.Printf("ERR %v\n", oneLine(err))
					return 1
				}
				m, err := w.Prev().Recv(ctx)
				if err == nil {
					err = checkMsg(m, prev, op, n)
				}
				if err != nil {
					fmt.Printf("ERR op %d: %v\n", op, oneLine(err))
					return 1
				}
			}
		}
		fmt.Println("OK")
	case "hang": // wait for a frame that never comes
		_, err := w.Prev().Recv(ctx)
		var pl *ring.PeerLostError
		if errors.As(err, &pl) {
			fmt.Printf("LOST %d %v\n", pl.Rank, oneLine(err))
		} else {
			fmt.Printf("ERR %v\n", oneLine(err))
		}
	default:
		fmt.Printf("ERR unknown mode %q\n", mode)
		return 2
	}
	if err := w.Close(); err != nil {
		fmt.Printf("ERR close: %v\n", oneLine(err))
		return 1
	}
	return 0
}

func oneLine(err error) string { return strings.ReplaceAll(fmt.Sprint(err), "\n", " | ") }

// event is one stdout line of a child.
type event struct {
	rank int
	line string
	at   time.Time
}

// procWorld is a job of child processes.
type procWorld struct {
	t      *testing.T
	cmds   []*exec.Cmd
	stderr []*testenv.SyncBuffer
	events chan event
	wg     sync.WaitGroup
}

func startProcs(t *testing.T, mode string, size int) *procWorld {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t, "127.0.0.1")
	p := &procWorld{t: t, events: make(chan event, 100)}
	for r := range size {
		env := []string{
			envChild + "=" + mode,
			EnvRank + "=" + strconv.Itoa(r),
			EnvWorldSize + "=" + strconv.Itoa(size),
			EnvSecret + "=" + hex.EncodeToString(testSecret),
			EnvBindAddr + "=127.0.0.1",
			EnvPeerTimeout + "=" + testPeerTimeout.String(),
			EnvJoinTimeout + "=" + testJoinTimeout.String(),
		}
		if r == 0 {
			env = append(env, EnvBindPort+"="+strconv.Itoa(port))
		} else {
			env = append(env, EnvJoin+"=127.0.0.1:"+strconv.Itoa(port))
		}
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), env...)
		errBuf := &testenv.SyncBuffer{}
		cmd.Stderr = errBuf
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.cmds = append(p.cmds, cmd)
		p.stderr = append(p.stderr, errBuf)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				p.events <- event{rank: r, line: sc.Text(), at: time.Now()}
			}
		}()
	}
	t.Cleanup(func() {
		for _, c := range p.cmds {
			c.Process.Kill()
		}
		p.wg.Wait()
		for _, c := range p.cmds {
			c.Wait()
		}
		if t.Failed() {
			for r, b := range p.stderr {
				t.Logf("rank %d stderr:\n%s", r, b)
			}
		}
	})
	return p
}

// expect collects one line starting with prefix from each rank in ranks,
// failing the test on any other line or after timeout.
func (p *procWorld) expect(prefix string, ranks []int, timeout time.Duration) map[int]event {
	p.t.Helper()
	got := make(map[int]event)
	want := make(map[int]bool)
	for _, r := range ranks {
		want[r] = true
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(got) < len(want) {
		select {
		case e := <-p.events:
			if !want[e.rank] || !strings.HasPrefix(e.line, prefix) {
				p.t.Fatalf("rank %d: %q while waiting for %s", e.rank, e.line, prefix)
			}
			got[e.rank] = e
		case <-deadline.C:
			p.t.Fatalf("after %v only %d of %d ranks said %s", timeout, len(got), len(want), prefix)
		}
	}
	return got
}

// wait checks that the children in ranks exit with status 0.
func (p *procWorld) wait(ranks []int) {
	p.t.Helper()
	for _, r := range ranks {
		if err := p.cmds[r].Wait(); err != nil {
			p.t.Errorf("rank %d: %v", r, err)
		}
	}
}

func allRanks(n int) []int {
	rs := make([]int, n)
	for i := range rs {
		rs[i] = i
	}
	return rs
}

func TestProcessesRing(t *testing.T) {
	p := startProcs(t, "ring", 4)
	p.expect("READY", allRanks(4), testJoinTimeout+5*time.Second)
	p.expect("OK", allRanks(4), 60*time.Second)
	p.wait(allRanks(4))
}

// testProcessLoss stops rank victim of 4 processes with sig and checks
// that every other rank reports it lost within PeerTimeout.
func testProcessLoss(t *testing.T, sig syscall.Signal) {
	const size, victim = 4, 2
	p := startProcs(t, "hang", size)
	p.expect("READY", allRanks(size), testJoinTimeout+5*time.Second)
	start := time.Now()
	if err := p.cmds[victim].Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	var others []int
	for r := range size {
		if r != victim {
			others = append(others, r)
		}
	}
	lost := p.expect("LOST", others, 3*testPeerTimeout)
	for r, e := range lost {
		el := e.at.Sub(start)
		if !strings.HasPrefix(e.line, fmt.Sprintf("LOST %d ", victim)) {
			t.Errorf("rank %d: %q, want rank %d lost", r, e.line, victim)
		}
		if el > testPeerTimeout {
			t.Errorf("rank %d reported the loss after %v, bound %v", r, el, testPeerTimeout)
		}
		t.Logf("rank %d after %v: %s", r, el.Round(time.Millisecond), e.line)
	}
	p.wait(others)
}

func TestProcessKilled(t *testing.T) { testProcessLoss(t, syscall.SIGKILL) }

// TestProcessStalled freezes a rank (SIGSTOP): its sockets stay open, so
// only the deadlines and memberlist's probes can notice.
func TestProcessStalled(t *testing.T) { testProcessLoss(t, syscall.SIGSTOP) }
