package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vccl/vccl/internal/testenv"
	"github.com/vccl/vccl/worker"
)

// envRole selects the child role when the test binary re-executes itself.
const (
	envRole = "VCCL_RELIABILITY_ROLE"
	envJob  = "VCCL_RELIABILITY_JOB" // marks every process of one job, to find leftovers
)

func TestMain(m *testing.M) { testenv.Main(m, envRole, childMain) }

// event is one JSON line a child prints on stdout.
type event struct {
	Ev    string `json:"ev"`
	Rank  int    `json:"rank"`
	Step  int    `json:"step"`
	TNS   int64  `json:"t_ns"`
	Hash  string `json:"hash,omitempty"`
	Exact bool   `json:"exact,omitempty"`
	NMSE  float64
	// error events
	Err        string `json:"err,omitempty"`
	Lost       int    `json:"lost"`
	Timeout    bool   `json:"timeout,omitempty"`
	Absent     int    `json:"absent"`
	PeerLost   bool   `json:"peer_lost,omitempty"`
	Shape      bool   `json:"shape,omitempty"`
	NonFinite  bool   `json:"nonfinite,omitempty"`
	BadFrame   bool   `json:"badframe,omitempty"`
	Aborted    bool   `json:"aborted,omitempty"`
	Protocol   bool   `json:"protocol,omitempty"`
	ElapsedNS  int64  `json:"elapsed_ns,omitempty"`
	Phase      string `json:"phase,omitempty"`
	Frac       float64
	Bytes      int64 `json:"bytes,omitempty"`
	Goroutines int   `json:"goroutines,omitempty"`
	Base       int   `json:"base,omitempty"`
	Leaked     bool  `json:"leaked,omitempty"`
	RSSKB      int64 `json:"rss_kb,omitempty"`
	HeapKB     int64 `json:"heap_kb,omitempty"`
	Detail     string
}

// proc is one rank process of a job.
type proc struct {
	rank   int
	cmd    *exec.Cmd
	events chan event // closed at EOF of stdout
	stderr *testenv.SyncBuffer
	stdin  *os.File
	done   chan struct{} // closed when Wait returned
	exitAt time.Time
	state  *os.ProcessState
	waited error
	all    []event
	mu     sync.Mutex
}

// job is a set of rank processes started together.
type job struct {
	t       testing.TB
	start   time.Time
	id      string
	addr    string // loopback IP the ranks bind
	secret  string
	procs   []*proc
	timeout time.Duration
}

// jobSpec describes a job to start.
type jobSpec struct {
	world       int
	role        string
	env         map[string]string         // for every rank
	rankEnv     map[int]map[string]string // extra variables per rank
	peerTimeout time.Duration
	// wrap, when set, runs each rank through this command prefix (e.g.
	// "ip netns exec NS"), with the rank's bind address.
	wrap     func(rank int) (prefix []string, bindAddr string)
	joinAddr string // rank 0's address as the others dial it; default the shared loopback IP
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// loopbackIP returns a random address in 127.77.0.0/16 so that concurrent
// jobs (and other packages' tests) do not fight over ports.
func loopbackIP() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(250*250))
	v := int(n.Int64())
	return fmt.Sprintf("127.77.%d.%d", v/250+1, v%250+2)
}

// startJob starts spec.world rank processes of the test binary in role
// spec.role and registers a cleanup that kills whatever is left and checks
// that no process of the job survives.
func startJob(t testing.TB, spec jobSpec) *job {
	t.Helper()
	j := &job{t: t, start: time.Now(), id: randomHex(8), addr: loopbackIP(), secret: randomHex(32), timeout: 60 * time.Second}
	if spec.peerTimeout == 0 {
		spec.peerTimeout = 5 * time.Second
	}
	joinHost := j.addr
	if spec.joinAddr != "" {
		joinHost = spec.joinAddr
	}
	port := 0
	if spec.wrap == nil {
		port = testenv.FreePort(t, j.addr)
	} else {
		port = 17946 // each rank has its own namespace: no contention
	}
	t.Cleanup(j.cleanup)
	for r := 0; r < spec.world; r++ {
		env := map[string]string{
			envRole:                  spec.role,
			envJob:                   j.id,
			worker.EnvRank:           strconv.Itoa(r),
			worker.EnvLocalRank:      strconv.Itoa(r),
			worker.EnvWorldSize:      strconv.Itoa(spec.world),
			worker.EnvSecret:         j.secret,
			worker.EnvBindAddr:       j.addr,
			worker.EnvPeerTimeout:    spec.peerTimeout.String(),
			worker.EnvJoinTimeout:    "30s",
			"VCCL_WARMUP_STEPS":      "0",
			"VCCL_RELIABILITY_WORLD": strconv.Itoa(spec.world),
		}
		var prefix []string
		if spec.wrap != nil {
			var bind string
			prefix, bind = spec.wrap(r)
			env[worker.EnvBindAddr] = bind
		}
		if r == 0 {
			env[worker.EnvBindPort] = strconv.Itoa(port)
		} else {
			env[worker.EnvBindPort] = "0"
		}
		env[worker.EnvJoin] = net.JoinHostPort(joinHost, strconv.Itoa(port))
		for k, v := range spec.env {
			env[k] = v
		}
		for k, v := range spec.rankEnv[r] {
			env[k] = v
		}
		j.procs = append(j.procs, j.spawn(r, env, prefix))
	}
	return j
}

func (j *job) spawn(rank int, env map[string]string, prefix []string) *proc {
	t := j.t
	t.Helper()
	var cmd *exec.Cmd
	args := []string{"-test.run=^$"}
	if len(prefix) > 0 {
		cmd = exec.Command(prefix[0], append(append(prefix[1:], os.Args[0]), args...)...)
	} else {
		cmd = exec.Command(os.Args[0], args...)
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VCCL_") || strings.HasPrefix(kv, "RELY_") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	for k, v := range env {
		if v != "" { // an empty value means "leave unset"
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{rank: rank, cmd: cmd, events: make(chan event, 4096), stderr: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = inR
	p.stdin = inW
	if err := cmd.Start(); err != nil {
		t.Fatalf("start rank %d: %v", rank, err)
	}
	inR.Close()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(p.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				fmt.Fprintf(p.stderr, "[harness] stdout line not JSON: %q\n", sc.Text())
				continue
			}
			e.Rank = rank
			p.mu.Lock()
			p.all = append(p.all, e)
			p.mu.Unlock()
			p.events <- e
		}
	}()
	go func() {
		<-readDone // Wait closes stdout; read it all first
		p.waited = cmd.Wait()
		p.exitAt = time.Now()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	return p
}

// next returns the next event of p, or fails the test when p's stdout ends
// or the deadline passes.
func (j *job) next(p *proc, deadline time.Time) (event, bool) {
	select {
	case e, ok := <-p.events:
		return e, ok
	case <-time.After(time.Until(deadline)):
		return event{}, false
	}
}

// waitEvent reads events of p until one with kind ev arrives (returned) or
// an "error" event arrives when ev is not "error" (returned too), or p's
// output ends or the deadline passes (ok false).
func (j *job) waitEvent(p *proc, ev string, deadline time.Time) (event, bool) {
	for {
		e, ok := j.next(p, deadline)
		if !ok {
			return e, false
		}
		if e.Ev == ev || e.Ev == "error" {
			return e, true
		}
	}
}

// waitExit waits for every process until the deadline; processes still
// running then are reported (hung) and killed.
func (j *job) waitExit(deadline time.Time) (hung []int) {
	for _, p := range j.procs {
		select {
		case <-p.done:
		case <-time.After(time.Until(deadline)):
			hung = append(hung, p.rank)
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	return hung
}

// events returns every event p printed so far.
func (p *proc) eventsSoFar() []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]event(nil), p.all...)
}

func (p *proc) exitDesc() string {
	if p.state == nil {
		return "running"
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit %d", p.state.ExitCode())
}

// timeline returns, per rank, when each event came and when it exited,
// relative to the job's start.
func (j *job) timeline() string {
	var b strings.Builder
	for _, p := range j.procs {
		fmt.Fprintf(&b, "rank %d:", p.rank)
		for _, e := range p.eventsSoFar() {
			if e.Ev == "op" && e.Step > 2 {
				continue
			}
			fmt.Fprintf(&b, " %s@%v", e.Ev, time.Unix(0, e.TNS).Sub(j.start).Round(time.Millisecond))
		}
		select {
		case <-p.done:
			fmt.Fprintf(&b, " exit@%v (%s)", p.exitAt.Sub(j.start).Round(time.Millisecond), p.exitDesc())
		default:
		}
		b.WriteString("\n")
	}
	return b.String()
}

// dump logs every rank's stderr tail, for a failing test.
func (j *job) dump() {
	j.t.Logf("timeline:\n%s", j.timeline())
	for _, p := range j.procs {
		s := p.stderr.String()
		if len(s) > 4000 {
			s = "…" + s[len(s)-4000:]
		}
		j.t.Logf("rank %d (%s) stderr:\n%s", p.rank, p.exitDesc(), s)
	}
}

// cleanup kills what is left of the job and checks that no process of it
// (found by its marker in /proc/*/environ) survives.
func (j *job) cleanup() {
	for _, p := range j.procs {
		p.stdin.Close()
		select {
		case <-p.done:
		default:
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	if j.t.Failed() {
		j.dump()
	} else if os.Getenv("RELY_TIMELINE") != "" {
		j.t.Logf("timeline:\n%s", j.timeline())
	} else if el := time.Since(j.start); el > 15*time.Second {
		j.t.Logf("slow job (%v)", el.Round(time.Millisecond))
		j.dump()
	}
	if left := processesWithMarker(j.id); len(left) > 0 {
		j.t.Errorf("job %s left processes behind: pids %v", j.id, left)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// processesWithMarker lists the pids whose environment holds envJob=id.
func processesWithMarker(id string) []int {
	needle := []byte(envJob + "=" + id + "\x00")
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if bytes.Contains(append(b, 0), needle) {
			// A zombie still has its entry but no environ; a readable
			// environ means a live process.
			pids = append(pids, pid)
		}
	}
	return pids
}

// listeners returns the TCP and UDP ports pid listens on (from /proc), so
// that a test can reach a rank's memberlist and link listeners.
func listeners(pid int) (tcp, udp []int, err error) {
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, nil, err
	}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	parse := func(file string, listenOnly bool) ([]int, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			return nil, err
		}
		var ports []int
		for i, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if i == 0 || len(f) < 10 {
				continue
			}
			if listenOnly && f[3] != "0A" {
				continue
			}
			if !inodes[f[9]] {
				continue
			}
			_, portHex, _ := strings.Cut(f[1], ":")
			p, err := strconv.ParseInt(portHex, 16, 32)
			if err == nil {
				ports = append(ports, int(p))
			}
		}
		return ports, nil
	}
	if tcp, err = parse("tcp", true); err != nil {
		return nil, nil, err
	}
	if udp, err = parse("udp", false); err != nil {
		return nil, nil, err
	}
	return tcp, udp, nil
}

// ctxDeadline is a short helper for a context with a timeout.
func ctxDeadline(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
