package reliability

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReliabilityStalledPeer freezes one rank with SIGSTOP before, during
// reduce-scatter and during allgather: its sockets stay open and nothing is
// closed, so only the deadlines can tell the survivors it is gone.
func TestReliabilityStalledPeer(t *testing.T) {
	runRandomFaults(t, 2, "stall a rank (SIGSTOP)",
		"stalled rank %d at %s (frac %.2f); slowest survivor error %v after the stall",
		func(t *testing.T, ft *faultTrial) {
			ft.env = map[string]string{"RELY_KILL_SIG": "STOP"}
		})
}

// runRandomFaults runs three trials, in parallel, of a fault aimed at a
// random rank and phase of a 4-rank job (see randomFault; rng stream
// stream), logs each with logf (victim, phase, frac, detection time) and
// summarizes them under title. setup completes each trial's faultTrial, a
// stalling fault of a raw 512×1024 allreduce, within its subtest.
func runRandomFaults(t *testing.T, stream uint64, title, logf string, setup func(t *testing.T, ft *faultTrial)) {
	rng := rand.New(rand.NewPCG(trialSeed(t), stream))
	var mu sync.Mutex
	var results []trialResult
	t.Run("trials", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			phase, victim, frac, step := randomFault(rng, i, 4)
			t.Run(fmt.Sprintf("%s_rank%d", phase, victim), func(t *testing.T) {
				t.Parallel()
				ft := faultTrial{
					world: 4, victim: victim, phase: phase, codec: "raw", rows: 512, cols: 1024,
					frac: frac, killStep: step, peerTimeout: 5 * time.Second, stall: true,
				}
				setup(t, &ft)
				r := runFaultTrial(t, ft)
				t.Logf(logf, victim, r.phase, r.frac, r.detect.Round(time.Millisecond))
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
		}
	})
	summarize(t, title, results)
}

// netnsAvailable reports why network namespaces cannot be used, or "".
func netnsAvailable() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no ip command (iproute2)"
	}
	// Root in a container may still be refused: try one.
	probe := "vrlprobe" + randomHex(3)
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns add fails: %v: %s", err, strings.TrimSpace(string(out)))
	}
	exec.Command("ip", "netns", "del", probe).Run()
	return ""
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// netnsRing makes world network namespaces joined by veth pairs to a bridge
// in another namespace, all removed at the end of the test. Rank r gets
// 10.78.0.(r+1)/24 on eth0. It returns the wrap function of jobSpec.
func netnsRing(t *testing.T, world int) func(rank int) ([]string, string) {
	t.Helper()
	tag := fmt.Sprintf("vrl%d%s", os.Getpid()%100000, randomHex(2))
	br := tag + "br"
	t.Cleanup(func() {
		for r := 0; r < world; r++ {
			exec.Command("ip", "netns", "del", fmt.Sprintf("%sh%d", tag, r)).Run()
		}
		exec.Command("ip", "netns", "del", br).Run()
	})
	run(t, "ip", "netns", "add", br)
	run(t, "ip", "-n", br, "link", "set", "lo", "up")
	run(t, "ip", "-n", br, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", br, "link", "set", "br0", "up")
	for r := 0; r < world; r++ {
		ns := fmt.Sprintf("%sh%d", tag, r)
		run(t, "ip", "netns", "add", ns)
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		run(t, "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", fmt.Sprintf("vh%d", r), "netns", br)
		run(t, "ip", "-n", br, "link", "set", fmt.Sprintf("vh%d", r), "master", "br0")
		run(t, "ip", "-n", br, "link", "set", fmt.Sprintf("vh%d", r), "up")
		run(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("10.78.0.%d/24", r+1), "dev", "eth0")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	return func(rank int) ([]string, string) {
		return []string{"ip", "netns", "exec", fmt.Sprintf("%sh%d", tag, rank)}, fmt.Sprintf("10.78.0.%d", rank+1)
	}
}

// TestReliabilityCutLink puts every rank in its own network namespace and,
// before, during reduce-scatter and during allgather, sets one rank's link
// down: no FIN, no RST, packets just vanish.
func TestReliabilityCutLink(t *testing.T) {
	if why := netnsAvailable(); why != "" {
		t.Skipf("needs network namespaces: %s", why)
	}
	runRandomFaults(t, 3, "cut a rank's link (veth down)",
		"cut rank %d's link at %s (frac %.2f); slowest survivor error %v after the cut",
		func(t *testing.T, ft *faultTrial) {
			ft.wrap = netnsRing(t, 4)
			ft.env = map[string]string{"RELY_KILL_CMD": "ip link set eth0 down"}
			ft.joinAddr = "10.78.0.1"
		})
}
