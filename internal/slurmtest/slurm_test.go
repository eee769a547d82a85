package slurmtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vccl/vccl/collective"
	"github.com/vccl/vccl/internal/testenv"
)

// envRole makes the test binary a rank program (see child).
const envRole = "VCCL_SLURMTEST_ROLE"

// envMarker is set in the environment of every daemon and srun the test
// starts; their children (slurmstepd, the tasks) inherit it, so a scan of
// /proc finds whatever is left of them.
const envMarker = "VCCL_SLURMTEST_CLUSTER"

func TestMain(m *testing.M) { testenv.Main(m, envRole, child) }

// child is a rank program: "fail" runs two allreduces, and rank
// VCCL_SLURMTEST_FAIL_RANK exits with code 3 between them.
func child(role string) int {
	if role != "fail" {
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		return 2
	}
	failRank, _ := strconv.Atoi(os.Getenv("VCCL_SLURMTEST_FAIL_RANK"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	comm, err := collective.InitFromEnv(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "init: %v\n", err)
		return 1
	}
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(comm.Rank() + i)
	}
	if _, err := comm.AllReduce(ctx, x); err != nil {
		fmt.Fprintf(os.Stderr, "rank %d: first allreduce: %v\n", comm.Rank(), err)
		return 1
	}
	if comm.Rank() == failRank {
		fmt.Fprintf(os.Stderr, "rank %d: injected failure after the first allreduce\n", comm.Rank())
		return 3
	}
	if _, err := comm.AllReduce(ctx, x); err != nil {
		fmt.Fprintf(os.Stderr, "rank %d: second allreduce: %v\n", comm.Rank(), err)
		comm.Close()
		return 1
	}
	fmt.Fprintf(os.Stderr, "rank %d: second allreduce succeeded without rank %d\n", comm.Rank(), failRank)
	comm.Close()
	return 0
}

// cluster is a one-node Slurm of the test's own.
type cluster struct {
	dir   string
	conf  string
	env   []string // for srun, sbatch, sinfo
	procs []*exec.Cmd
}

func lookTools(t *testing.T) map[string]string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: slurmd starts every task as its user, and munged and slurmd run as root here (CI runs as root)")
	}
	tools := map[string]string{}
	for _, name := range []string{"munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo", "scontrol"} {
		p, err := exec.LookPath(name)
		if err != nil {
			for _, d := range []string{"/usr/sbin", "/usr/bin"} {
				if _, serr := os.Stat(filepath.Join(d, name)); serr == nil {
					p, err = filepath.Join(d, name), nil
				}
			}
		}
		if err != nil {
			t.Skipf("Slurm is not installed (no %s): bash scripts/setup-slurm.sh installs Debian's slurm-wlm and munge", name)
		}
		tools[name] = p
	}
	return tools
}

// baseEnv is this process's environment without any job's variables.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VCCL_") || strings.HasPrefix(k, "SLURM_") || k == "JOB_COMPLETION_INDEX" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startCluster starts munged, slurmctld and slurmd and waits until the
// node is idle. t.Cleanup stops them.
func startCluster(t *testing.T, tools map[string]string) *cluster {
	t.Helper()
	// A short path: munged's socket path must fit in sockaddr_un.
	dir, err := os.MkdirTemp("", "vccl-slurm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &cluster{dir: dir, conf: filepath.Join(dir, "slurm.conf")}
	t.Cleanup(c.stop(t))
	for _, d := range []string{"munge", "ctld", "spool", "log"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	key := make([]byte, 1024)
	rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, "munge", "key"), key, 0o400); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "munge", "sock")
	c.env = append(baseEnv(), "SLURM_CONF="+c.conf, envMarker+"="+dir)
	c.start(t, tools["munged"], "-F", "--force", "--key-file="+filepath.Join(dir, "munge", "key"), "--socket="+sock,
		"--pid-file="+filepath.Join(dir, "munge", "pid"), "--seed-file="+filepath.Join(dir, "munge", "seed"),
		"--log-file="+filepath.Join(dir, "log", "munged.log"))
	c.await(t, "munged's socket", func() bool { _, err := os.Stat(sock); return err == nil })

	// Job ids, and so the rendezvous ports derived from them, differ from
	// run to run.
	first, _ := rand.Int(rand.Reader, big.NewInt(400000))
	conf := fmt.Sprintf(`ClusterName=vccltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=%d
SlurmdPort=%d
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=%s
CredType=cred/munge
StateSaveLocation=%s
SlurmdSpoolDir=%s
SlurmctldPidFile=%s
SlurmdPidFile=%s
SlurmctldLogFile=%s
SlurmdLogFile=%s
FirstJobId=%d
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=vccl Nodes=localhost Default=YES MaxTime=10 State=UP
`, testenv.FreePort(t, "127.0.0.1"), testenv.FreePort(t, "127.0.0.1"), sock,
		filepath.Join(dir, "ctld"), filepath.Join(dir, "spool"), filepath.Join(dir, "ctld.pid"), filepath.Join(dir, "slurmd.pid"),
		filepath.Join(dir, "log", "slurmctld.log"), filepath.Join(dir, "log", "slurmd.log"), 1000+first.Int64())
	if err := os.WriteFile(c.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(t, tools["slurmctld"], "-D", "-i", "-f", c.conf)
	c.start(t, tools["slurmd"], "-D", "-N", "localhost", "-f", c.conf)
	c.await(t, "the node to be idle", func() bool {
		out, _ := c.cmd(context.Background(), tools["sinfo"], "-h", "-N", "-o", "%T").Output()
		return strings.TrimSpace(string(out)) == "idle"
	})
	return c
}

// cmd is a command in the cluster's environment.
func (c *cluster) cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (c *cluster) start(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = c.env
	log := filepath.Join(c.dir, "log", filepath.Base(name)+".out")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	c.procs = append(c.procs, cmd)
}

// await polls cond until it holds (bounded: 30 s).
func (c *cluster) await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		for _, p := range c.procs {
			if p.ProcessState != nil {
				t.Fatalf("%s exited while waiting for %s\n%s", p.Path, what, c.logs())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s\n%s", what, c.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logs returns the tails of the daemons' logs.
func (c *cluster) logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(c.dir, "log", "*"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "--- %s\n%s\n", filepath.Base(f), testenv.Tail(string(data), 1500))
	}
	return b.String()
}

// stop returns the cleanup that stops the daemons (SIGTERM, then SIGKILL
// after 10 s) and kills anything else that carries the cluster's marker.
func (c *cluster) stop(t *testing.T) func() {
	return func() {
		for i := len(c.procs) - 1; i >= 0; i-- {
			p := c.procs[i]
			p.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				p.Process.Kill()
				<-done
			}
		}
		for _, pid := range c.leftovers("") {
			t.Logf("killing leftover process %d", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// leftovers lists the processes that carry the cluster's marker other
// than the daemons, those running exe only if exe is not "".
func (c *cluster) leftovers(exe string) []int {
	daemons := map[int]bool{}
	for _, p := range c.procs {
		if p.ProcessState == nil {
			daemons[p.Process.Pid] = true
		}
	}
	marker := []byte(envMarker + "=" + c.dir + "\x00")
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || daemons[pid] || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, marker) {
			continue
		}
		if exe != "" {
			if p, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err != nil || p != exe {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

type runResult struct {
	code           int
	stdout, stderr string
}

// run runs a command in the cluster's environment plus env (bounded: 90 s).
func (c *cluster) run(t *testing.T, env []string, name string, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := c.cmd(ctx, name, args...)
	cmd.Env = append(append([]string(nil), c.env...), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish within 90s\nstdout:\n%s\nstderr:\n%s\n%s", name, args, so.String(), se.String(), c.logs())
	}
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return runResult{code: code, stdout: so.String(), stderr: se.String()}
}

// perfResult is the part of allreduce_perf's -json object the test checks.
type perfResult struct {
	Size  int64   `json:"size"`
	Count int     `json:"count"`
	Wrong int     `json:"wrong"`
	Ranks int     `json:"ranks"`
	Codec string  `json:"codec"`
	BPV   float64 `json:"bpv"`
	NMSE  float64 `json:"nmse"`
}

// perfResults parses allreduce_perf's -json lines from out; prefix is
// stripped from each line first (the launcher's "[0] ").
func perfResults(t *testing.T, out, prefix string) []perfResult {
	t.Helper()
	var rs []perfResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok || !strings.HasPrefix(l, "{") {
			continue
		}
		var r perfResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		rs = append(rs, r)
	}
	return rs
}

// checkPerf checks allreduce_perf's results for 4 ranks: #wrong 0 at every
// size, and for h264 compression on the tensors big enough for video.
func checkPerf(t *testing.T, rs []perfResult, codec string, sizes int) {
	t.Helper()
	if len(rs) != sizes {
		t.Fatalf("%d results, want %d", len(rs), sizes)
	}
	for _, r := range rs {
		t.Logf("%6d B  %-4s  #wrong %d  ranks %d  bpv %6.3f  nmse %.3g", r.Size, r.Codec, r.Wrong, r.Ranks, r.BPV, r.NMSE)
		if r.Wrong != 0 || r.Ranks != 4 {
			t.Errorf("%+v: want #wrong 0 over 4 ranks", r)
		}
		switch {
		case codec == "raw" && (r.NMSE > 1e-12 || r.Codec != "raw"):
			t.Errorf("raw: %+v", r)
		case codec == "h264" && r.Count >= 16384 && (r.Codec != "h264" || !(r.BPV < 16) || !(r.NMSE > 0 && r.NMSE < 2)):
			t.Errorf("h264: %+v", r)
		}
	}
}

// build builds the packages' commands into dir.
func build(t *testing.T, dir string, pkgs map[string]string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for name, pkg := range pkgs {
		cmd := exec.Command(goTool, "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
}

// TestSlurm runs vccl jobs on a one-node Slurm started by the test.
func TestSlurm(t *testing.T) {
	tools := lookTools(t)
	bin := t.TempDir()
	build(t, bin, map[string]string{"allreduce_perf": "./examples/allreduce_perf", "launcher": "./launcher"})
	perf, launcher := filepath.Join(bin, "allreduce_perf"), filepath.Join(bin, "launcher")
	sbatchScript, _ := filepath.Abs(filepath.Join("..", "..", "examples", "slurm", "vccl.sbatch"))
	c := startCluster(t, tools)
	secret := filepath.Join(c.dir, "job.secret")
	if err := os.WriteFile(secret, []byte("the secret of the slurm test's jobs\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	perfArgs := []string{"-b", "4K", "-e", "64K", "-f", "4", "-n", "2", "-w", "1", "-c", "1", "-json"}

	// srun -n 4 allreduce_perf: every rank from Slurm's environment alone.
	for _, codec := range []string{"raw", "h264"} {
		t.Run("srun allreduce_perf "+codec, func(t *testing.T) {
			res := c.run(t, []string{"VCCL_SECRET_FILE=" + secret}, tools["srun"], append(append([]string{"-n", "4", perf}, perfArgs...), "-codec", codec)...)
			if res.code != 0 {
				t.Fatalf("srun exit code %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
			}
			checkPerf(t, perfResults(t, res.stdout, ""), codec, 3)
		})
	}

	t.Run("no secret", func(t *testing.T) {
		res := c.run(t, nil, tools["srun"], "-n", "2", perf, "-b", "4K", "-e", "4K")
		if res.code == 0 || !strings.Contains(res.stderr, "no job secret") || !strings.Contains(res.stderr, "VCCL_SECRET_FILE") {
			t.Fatalf("exit code %d; want a refusal that says how to set a secret\nstderr:\n%s", res.code, res.stderr)
		}
	})

	// One rank fails after the first allreduce: the others fail too,
	// naming it, srun exits with its code, and nothing is left running.
	t.Run("failing rank", func(t *testing.T) {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res := c.run(t, []string{"VCCL_SECRET_FILE=" + secret, envRole + "=fail", "VCCL_SLURMTEST_FAIL_RANK=2",
			"VCCL_CODEC=raw", "VCCL_PEER_TIMEOUT=5s"}, tools["srun"], "-l", "-n", "4", exe)
		out := res.stdout + res.stderr
		if res.code != 3 {
			t.Errorf("srun exit code %d, want 3 (the failing rank's)", res.code)
		}
		if !strings.Contains(out, "2: rank 2: injected failure") {
			t.Errorf("rank 2's error is missing")
		}
		// Rank 2 leaves once its first allreduce is done; the others may
		// still be in that one's closing status round, so they fail in
		// the first or the second.
		for _, r := range []string{"0", "1", "3"} {
			if !regexp.MustCompile(`(?m)^` + r + `: rank ` + r + `: (first|second) allreduce: collective: `).MatchString(out) {
				t.Errorf("rank %s did not fail its allreduce", r)
			}
		}
		if !strings.Contains(out, "rank 2 lost") {
			t.Errorf("no rank's error names rank 2 as lost")
		}
		if t.Failed() {
			t.Logf("srun output:\n%s", out)
		}
		if left := c.leftovers(exe); len(left) > 0 {
			t.Errorf("processes left after the step: %v", left)
		}
		t.Logf("failing step ended after %v", time.Since(start).Round(time.Millisecond))
	})

	// The launcher inside an srun step: two tasks are two nodes of two
	// ranks each.
	t.Run("srun launcher", func(t *testing.T) {
		res := c.run(t, []string{"VCCL_SECRET_FILE=" + secret}, tools["srun"],
			append(append([]string{"-n", "2", launcher, "-np", "2", "--", perf}, perfArgs...), "-codec", "raw")...)
		if res.code != 0 {
			t.Fatalf("srun exit code %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
		}
		checkPerf(t, perfResults(t, res.stdout, "[0] "), "raw", 3)
	})

	// The README's batch script, as a user submits it.
	t.Run("sbatch", func(t *testing.T) {
		out := filepath.Join(c.dir, "sbatch.out")
		res := c.run(t, nil, tools["sbatch"], append(append([]string{"--parsable", "-n", "4", "-o", out, sbatchScript, perf}, perfArgs...), "-codec", "h264")...)
		job := strings.TrimSpace(res.stdout)
		if res.code != 0 || job == "" {
			t.Fatalf("sbatch exit code %d\n%s%s", res.code, res.stdout, res.stderr)
		}
		// sbatch --wait polls every 10 s; ask the controller more often.
		var state string
		c.await(t, "job "+job+" to end", func() bool {
			b, _ := c.cmd(context.Background(), tools["scontrol"], "-o", "show", "job", job).Output()
			state = string(b)
			return !strings.Contains(state, "JobState=PENDING") && !strings.Contains(state, "JobState=RUNNING") &&
				!strings.Contains(state, "JobState=COMPLETING") && strings.Contains(state, "JobState=")
		})
		data, _ := os.ReadFile(out)
		if !strings.Contains(state, "JobState=COMPLETED") || !strings.Contains(state, "ExitCode=0:0") {
			t.Fatalf("job %s: %s\njob output:\n%s", job, state, data)
		}
		checkPerf(t, perfResults(t, string(data), ""), "h264", 3)
	})
}
