package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// ipPath is the resolved `ip` command, set by netnsPair.
var ipPath string

// netnsPair is two network namespaces joined by a veth pair: a at
// 10.213.X.1/24 and b at 10.213.X.2/24, X from the test's pid.
type netnsPair struct {
	a, b         string // namespace names
	addrA, addrB string
}

// ip runs `ip args...` and returns its combined output.
func ip(args ...string) (string, error) {
	out, err := exec.Command(ipPath, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// newNetnsPair creates the namespaces, or skips the test with the reason
// when the test cannot (not root, no iproute2, no netns support). Cleanup
// removes them on every path, including a failed setup.
func newNetnsPair(t *testing.T) *netnsPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping the network-namespace test: it needs root (ip netns add)")
	}
	p, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("skipping the network-namespace test: `ip` (iproute2) is not installed")
	}
	ipPath = p
	id := os.Getpid() % 100000
	n := &netnsPair{
		a:     fmt.Sprintf("vccl-launcher-%d-a", id),
		b:     fmt.Sprintf("vccl-launcher-%d-b", id),
		addrA: fmt.Sprintf("10.213.%d.1", id%250+1),
		addrB: fmt.Sprintf("10.213.%d.2", id%250+1),
	}
	vethA, vethB := fmt.Sprintf("vlA%d", id), fmt.Sprintf("vlB%d", id)
	cleanup := func() {
		// Deleting a namespace destroys the veth end inside it, and
		// with it the pair; the link delete covers a half-done setup.
		ip("netns", "del", n.a)
		ip("netns", "del", n.b)
		ip("link", "del", vethA)
	}
	cleanup() // leftovers of an earlier run with the same pid
	t.Cleanup(cleanup)
	if _, err := ip("netns", "add", n.a); err != nil {
		t.Skipf("skipping the network-namespace test: `ip netns` is unavailable here: %v", err)
	}
	steps := [][]string{
		{"netns", "add", n.b},
		{"link", "add", vethA, "type", "veth", "peer", "name", vethB},
		{"link", "set", vethA, "netns", n.a},
		{"link", "set", vethB, "netns", n.b},
		{"-n", n.a, "addr", "add", n.addrA + "/24", "dev", vethA},
		{"-n", n.b, "addr", "add", n.addrB + "/24", "dev", vethB},
		{"-n", n.a, "link", "set", vethA, "up"},
		{"-n", n.b, "link", "set", vethB, "up"},
		{"-n", n.a, "link", "set", "lo", "up"},
		{"-n", n.b, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if _, err := ip(s...); err != nil {
			t.Fatalf("network namespace setup: %v", err)
		}
	}
	return n
}

// runPair runs node 0's launcher in a and node 1's in b.
func (n *netnsPair) runPair(t *testing.T, args0, args1 []string) [2]result {
	t.Helper()
	var res [2]result
	var errs [2]error
	var wg sync.WaitGroup
	for i, c := range []struct {
		ns   string
		args []string
	}{{n.a, args0}, {n.b, args1}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = tryLauncherIn(t, c.ns, nil, c.args...)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	return res
}

// perfBuild is the background build of examples/allreduce_perf that
// TestMain starts when the network-namespace test will run, so that the
// build overlaps the other tests.
var perfBuild struct {
	done chan struct{}
	path string
	out  []byte
	err  error
}

// netnsTestWanted reports whether TestMultiNodeNetns may run (it still
// skips if `ip netns add` fails).
func netnsTestWanted() bool {
	if os.Geteuid() != 0 {
		return false
	}
	_, err := exec.LookPath("ip")
	return err == nil
}

// startPerfBuild builds allreduce_perf into dir in the background.
func startPerfBuild(dir string) {
	perfBuild.done = make(chan struct{})
	go func() {
		defer close(perfBuild.done)
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		perfBuild.path = filepath.Join(dir, "allreduce_perf")
		cmd := exec.Command(goBin, "build", "-o", perfBuild.path, "./examples/allreduce_perf")
		cmd.Dir = ".." // the module root
		perfBuild.out, perfBuild.err = cmd.CombinedOutput()
	}()
}

// allreducePerf waits for the background build and returns the binary.
func allreducePerf(t *testing.T) string {
	t.Helper()
	if perfBuild.done == nil {
		startPerfBuild(t.TempDir())
	}
	<-perfBuild.done
	if perfBuild.err != nil {
		t.Fatalf("go build ./examples/allreduce_perf: %v\n%s", perfBuild.err, perfBuild.out)
	}
	return perfBuild.path
}

// TestMultiNodeNetns runs two launchers in two network namespaces joined by
// veth: node 1 finds its own address from the route to the rendezvous, and
// the four ranks complete checked allreduces across the two "hosts".
func TestMultiNodeNetns(t *testing.T) {
	t.Parallel() // mostly waits for the build and the network
	if testing.Short() {
		t.Skip("skipping the network-namespace test in -short mode (it builds examples/allreduce_perf)")
	}
	n := newNetnsPair(t)
	sf := secretFile(t)
	rdzv := n.addrA + ":29400"
	common := []string{"--nnodes", "2", "--rdzv", rdzv, "--secret-file", sf, "-np", "2", "--rdzv-timeout", "30s"}

	t.Run("env", func(t *testing.T) {
		res := n.runPair(t,
			append(append([]string{"--node-rank", "0"}, common...), helperArgs(t, "env")...),
			append(append([]string{"--node-rank", "1"}, common...), helperArgs(t, "env")...),
		)
		for k, r := range res {
			if r.code != 0 {
				t.Fatalf("node %d: exit code %d; stderr:\n%s", k, r.code, r.stderr)
			}
			for rank, env := range parseEnvOutput(t, r.stdout) {
				wantAddr := []string{n.addrA, n.addrB}[k]
				if env["VCCL_BIND_ADDR"] != wantAddr || env["VCCL_RANK"] != strconv.Itoa(rank) || rank/2 != k {
					t.Errorf("node %d rank %d: VCCL_BIND_ADDR %q (want %s), VCCL_RANK %q", k, rank, env["VCCL_BIND_ADDR"], wantAddr, env["VCCL_RANK"])
				}
				if !strings.HasPrefix(env["VCCL_JOIN"], n.addrA+":") {
					t.Errorf("node %d rank %d: VCCL_JOIN %q, want %s:<port>", k, rank, env["VCCL_JOIN"], n.addrA)
				}
			}
		}
	})

	t.Run("allreduce", func(t *testing.T) {
		perf := allreducePerf(t)
		prog := []string{"--", perf, "-b", "256K", "-e", "256K", "-w", "1", "-n", "2", "-c", "1", "-json"}
		res := n.runPair(t,
			append(append([]string{"--node-rank", "0", "--codec", lossyCodec}, common...), prog...),
			append(append([]string{"--node-rank", "1", "--codec", lossyCodec}, common...), prog...),
		)
		for k, r := range res {
			if r.code != 0 {
				t.Fatalf("node %d: exit code %d\nstdout:\n%s\nstderr:\n%s", k, r.code, r.stdout, r.stderr)
			}
		}
		var rows int
		for _, l := range strings.Split(res[0].stdout, "\n") {
			js, ok := strings.CutPrefix(l, "[0] {")
			if !ok {
				continue
			}
			var row struct {
				Size  int64   `json:"size"`
				Wrong int     `json:"wrong"`
				Ranks int     `json:"ranks"`
				Codec string  `json:"codec"`
				BPV   float64 `json:"bpv"`
				NMSE  float64 `json:"nmse"`
				Time  float64 `json:"time_us"`
			}
			if err := json.Unmarshal([]byte("{"+js), &row); err != nil {
				t.Fatalf("rank 0 line %q: %v", l, err)
			}
			rows++
			t.Logf("size %d: codec %s, %.2f bits/value, NMSE %.3g, %.0f us, #wrong %d", row.Size, row.Codec, row.BPV, row.NMSE, row.Time, row.Wrong)
			if row.Ranks != 4 || row.Wrong != 0 || row.NMSE < 0 {
				t.Errorf("size %d: ranks %d, #wrong %d, nmse %g: want 4 ranks, 0 wrong, checked", row.Size, row.Ranks, row.Wrong, row.NMSE)
			}
		}
		if rows != 1 {
			t.Fatalf("rank 0 printed %d result rows, want 1\nstdout:\n%s\nstderr:\n%s", rows, res[0].stdout, res[0].stderr)
		}
	})
}
