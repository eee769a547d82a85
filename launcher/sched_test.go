package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vccl/vccl/internal/schedenv"
	"github.com/vccl/vccl/internal/testenv"
)

// rankView is what a rank learns about its job: the fields of
// worker.Config that ConfigFromEnv fills from the environment, with the
// rendezvous resolved to an address.
type rankView struct {
	Rank, World, Local int
	Rdzv               string // rank 0's memberlist address, resolved
	BindAddr           string
	BindPort           string
	Secret             string // hex
}

// loopNet is a made-up cluster on loopback addresses: node k has address
// 127.0.0.(k+1).
type loopNet struct {
	hosts map[string]string
	self  string // this node's address
	name  string // this node's host name
}

func (n loopNet) LookupIP(h string) (string, error) {
	if ip := net.ParseIP(h); ip != nil {
		return ip.String(), nil
	}
	if ip, ok := n.hosts[h]; ok {
		return ip, nil
	}
	return "", fmt.Errorf("no such host %q", h)
}
func (n loopNet) RouteTo(string) (string, error) { return n.self, nil }
func (n loopNet) CheckBind(ip string, port int) error {
	if ip != n.self {
		return errors.New("not an address of this node")
	}
	return nil
}
func (n loopNet) Hostname() (string, error) { return n.name, nil }

// viewOf runs the scheduler mapping (what worker.ConfigFromEnv does) over
// env on node n.
func viewOf(t *testing.T, env map[string]string, n loopNet) rankView {
	t.Helper()
	l, _, err := schedenv.Overlay(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, n)
	if err != nil {
		t.Fatalf("Overlay(%v): %v", env, err)
	}
	get := func(k string) string { v, _ := l(k); return v }
	atoi := func(k string) int {
		v, err := strconv.Atoi(get(k))
		if err != nil {
			t.Fatalf("%s=%q: %v", k, get(k), err)
		}
		return v
	}
	host, port, err := net.SplitHostPort(get(envJoin))
	if err != nil {
		t.Fatalf("%s=%q: %v", envJoin, get(envJoin), err)
	}
	ip, err := n.LookupIP(host)
	if err != nil {
		t.Fatal(err)
	}
	return rankView{Rank: atoi(envRank), World: atoi(envWorldSize), Local: atoi(envLocalRank),
		Rdzv: net.JoinHostPort(ip, port), BindAddr: get(envBindAddr), BindPort: get(envBindPort), Secret: get(envSecret)}
}

// launcherViews runs one launcher per node (env[k] added to node k's
// environment, args[k] its flags) with the env helper and returns every
// rank's view, indexed by global rank.
func launcherViews(t *testing.T, nodes, world int, env func(k int) []string, args func(k int) []string) map[int]rankView {
	t.Helper()
	barrier := filepath.Join(t.TempDir(), "barrier")
	res := make([]result, nodes)
	errs := testenv.Parallel(nodes, func(k int) error {
		var err error
		res[k], err = tryLauncher(t, env(k), append(args(k), helperArgs(t, "env-barrier", barrier, strconv.Itoa(world))...)...)
		return err
	})
	views := map[int]rankView{}
	for k := range res {
		if errs[k] != nil {
			t.Fatalf("node %d: %v", k, errs[k])
		}
		if res[k].code != 0 {
			t.Fatalf("node %d: exit code %d; stderr:\n%s", k, res[k].code, res[k].stderr)
		}
		addr := "127.0.0." + strconv.Itoa(k+1)
		for rank, e := range parseEnvOutput(t, res[k].stdout) {
			views[rank] = viewOf(t, e, loopNet{self: addr})
		}
	}
	return views
}

// cleanEnv hides the test's own job variables from the launchers.
func cleanEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VCCL_") && k != envAsLauncher || strings.HasPrefix(k, "SLURM_") || k == "JOB_COMPLETION_INDEX" {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// TestSchedulersSameView: a job of 2 nodes × 2 ranks and one of 4 nodes ×
// 1 rank, started by Slurm directly (srun of the program), by the
// launcher's own multi-node mode, by the launcher inside a Slurm step and,
// for one rank per node, by a Kubernetes Indexed Job: every rank gets the
// same rank, world size, local rank, rendezvous, bind address and secret
// from each.
func TestSchedulersSameView(t *testing.T) {
	cleanEnv(t)
	sf := secretFile(t)
	for _, shape := range []struct{ nodes, perNode int }{{2, 2}, {4, 1}} {
		t.Run(fmt.Sprintf("%dx%d", shape.nodes, shape.perNode), func(t *testing.T) {
			world := shape.nodes * shape.perNode
			port0 := testenv.FreePort(t, "127.0.0.1") // global rank 0's memberlist port
			rdzv := testenv.FreePort(t, "127.0.0.1")  // the launchers' rendezvous
			nodeAddr := func(k int) string { return "127.0.0." + strconv.Itoa(k+1) }
			nodelist := fmt.Sprintf("n[1-%d]", shape.nodes)
			hosts := map[string]string{}
			for k := 0; k < shape.nodes; k++ {
				hosts["n"+strconv.Itoa(k+1)] = nodeAddr(k)
			}
			views := map[string]map[int]rankView{}

			// Slurm: srun -n world --ntasks-per-node perNode ./train
			views["slurm"] = map[int]rankView{}
			for r := 0; r < world; r++ {
				env := map[string]string{"SLURM_JOB_ID": "31", "SLURM_STEP_ID": "0", "SLURM_PROCID": strconv.Itoa(r),
					"SLURM_NTASKS": strconv.Itoa(world), "SLURM_LOCALID": strconv.Itoa(r % shape.perNode),
					"SLURM_JOB_NODELIST": nodelist, "SLURM_STEP_NODELIST": nodelist,
					envRdzvPort: strconv.Itoa(port0), envSecretFile: sf}
				k := r / shape.perNode
				views["slurm"][r] = viewOf(t, env, loopNet{hosts: hosts, self: nodeAddr(k)})
			}

			// The launcher's own multi-node mode.
			views["launcher"] = launcherViews(t, shape.nodes, world, func(int) []string { return nil }, func(k int) []string {
				return []string{"--nnodes", strconv.Itoa(shape.nodes), "--node-rank", strconv.Itoa(k), "--addr", nodeAddr(k),
					"--rdzv", net.JoinHostPort("127.0.0.1", strconv.Itoa(rdzv)), "--port", strconv.Itoa(port0),
					"--secret-file", sf, "-np", strconv.Itoa(shape.perNode)}
			})

			// The launcher inside a Slurm step: one task per node.
			views["launcher in srun"] = launcherViews(t, shape.nodes, world, func(k int) []string {
				return []string{"SLURM_JOB_ID=31", "SLURM_STEP_ID=1", "SLURM_PROCID=" + strconv.Itoa(k),
					"SLURM_NTASKS=" + strconv.Itoa(shape.nodes), "SLURM_LOCALID=0",
					"SLURM_STEP_NODELIST=127.0.0.1,127.0.0.[2-4]", envRdzvPort + "=" + strconv.Itoa(rdzv), envSecretFile + "=" + sf}
			}, func(k int) []string {
				return []string{"--addr", nodeAddr(k), "--port", strconv.Itoa(port0), "-np", strconv.Itoa(shape.perNode)}
			})

			// Kubernetes: an Indexed Job of one rank per pod, as
			// examples/kubernetes/vccl-job.yaml.
			if shape.perNode == 1 {
				views["kubernetes"] = map[int]rankView{}
				k8sHosts := map[string]string{"train-0.vccl": nodeAddr(0)}
				for r := 0; r < world; r++ {
					k8sHosts["train-"+strconv.Itoa(r)] = nodeAddr(r)
				}
				for r := 0; r < world; r++ {
					env := map[string]string{"JOB_COMPLETION_INDEX": strconv.Itoa(r), "HOSTNAME": "train-" + strconv.Itoa(r),
						envWorldSize: strconv.Itoa(world), envK8sService: "vccl", envRdzvPort: strconv.Itoa(port0), envSecretFile: sf}
					views["kubernetes"][r] = viewOf(t, env, loopNet{hosts: k8sHosts, self: nodeAddr(r), name: "train-" + strconv.Itoa(r)})
				}
			}

			ref := views["launcher"]
			if len(ref) != world {
				t.Fatalf("launcher: %d ranks, want %d", len(ref), world)
			}
			for r := 0; r < world; r++ {
				want := ref[r]
				wantPort := "0"
				if r == 0 {
					wantPort = strconv.Itoa(port0)
				}
				if want.Rank != r || want.World != world || want.Local != r%shape.perNode || want.BindAddr != nodeAddr(r/shape.perNode) ||
					want.BindPort != wantPort || want.Rdzv != net.JoinHostPort("127.0.0.1", strconv.Itoa(port0)) || len(want.Secret) != 64 {
					t.Errorf("launcher rank %d: %+v", r, want)
				}
				for name, vs := range views {
					if vs[r] != want {
						t.Errorf("rank %d: %s gives %+v, the launcher %+v", r, name, vs[r], want)
					}
				}
			}
		})
	}
}

// TestFromSlurm: the launcher inside an srun step takes its shape from
// Slurm, explicit flags win, and a multi-node step without a secret is
// refused with a message saying how to set one.
func TestFromSlurm(t *testing.T) {
	slurm := map[string]string{"SLURM_JOB_ID": "12", "SLURM_STEP_ID": "3", "SLURM_PROCID": "1", "SLURM_NTASKS": "3",
		"SLURM_LOCALID": "0", "SLURM_STEP_NODELIST": "gpu[07-09]", envSecretFile: "/shared/job.secret"}
	lookup := func(m map[string]string) schedenv.Lookup {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	o := &options{nnodes: 1}
	if err := o.fromEnv(lookup(slurm), map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if o.nnodes != 3 || o.nodeRank != 1 || o.rdzv != "gpu07:"+strconv.Itoa(schedenv.SlurmPort(12, 3)) ||
		o.secretFile != "/shared/job.secret" || o.secretName != envSecretFile {
		t.Errorf("from Slurm: %+v", o)
	}
	o = &options{nnodes: 2, nodeRank: 0, rdzv: "10.0.0.1:29400", secret: "given on the command line"}
	if err := o.fromEnv(lookup(slurm), map[string]bool{"nnodes": true, "rdzv": true, "secret": true}); err != nil {
		t.Fatal(err)
	}
	if o.nnodes != 2 || o.nodeRank != 0 || o.rdzv != "10.0.0.1:29400" || o.secretFile != "" {
		t.Errorf("explicit flags lost: %+v", o)
	}
	delete(slurm, envSecretFile)
	o = &options{nnodes: 1, nproc: 1, rdzvTimeout: 1, grace: 1}
	if err := o.fromEnv(lookup(slurm), map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	err := o.validate()
	if err == nil || !strings.Contains(err.Error(), "Slurm job 12 step 3") || !strings.Contains(err.Error(), envSecretFile) {
		t.Errorf("no secret: %v", err)
	}
	slurm[envSecret] = "not hex"
	if err := (&options{}).fromEnv(lookup(slurm), map[string]bool{}); err == nil || !strings.Contains(err.Error(), envSecret) {
		t.Errorf("VCCL_SECRET not hex: %v", err)
	}
}
