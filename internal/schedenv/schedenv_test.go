package schedenv

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeNet is one node of a made-up cluster.
type fakeNet struct {
	hosts    map[string]string // DNS
	local    string            // this node's address
	hostname string
	taken    map[int]bool // ports in use here
}

func (f fakeNet) LookupIP(h string) (string, error) {
	if ip, ok := f.hosts[h]; ok {
		return ip, nil
	}
	return "", errors.New("no such host")
}
func (f fakeNet) RouteTo(string) (string, error) { return f.local, nil }
func (f fakeNet) CheckBind(ip string, port int) error {
	if ip != f.local {
		return errors.New("cannot assign requested address")
	}
	if f.taken[port] {
		return errors.New("address already in use")
	}
	return nil
}
func (f fakeNet) Hostname() (string, error) { return f.hostname, nil }

var itoa = strconv.Itoa

var cluster = map[string]string{"gpu01": "10.0.0.1", "gpu02": "10.0.0.2", "gpu03": "10.0.0.3", "gpu07": "10.0.0.7",
	"train-0.vccl": "10.1.0.10"}

func mapEnv(m map[string]string) Lookup {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// slurmTask is the environment srun gives task rank of a step of
// 4 tasks, 2 per node, on gpu[02-03] of job 4242 (nodelist gpu[01-03,07]).
func slurmTask(rank int) map[string]string {
	return map[string]string{
		"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "1", "SLURM_PROCID": itoa(rank), "SLURM_NTASKS": "4",
		"SLURM_LOCALID": itoa(rank % 2), "SLURM_JOB_NODELIST": "gpu[01-03,07]", "SLURM_STEP_NODELIST": "gpu[02-03]",
		"SLURMD_NODENAME": []string{"gpu02", "gpu03"}[rank/2],
	}
}

func view(t *testing.T, env map[string]string, n Net) map[string]string {
	t.Helper()
	l, _, err := Overlay(mapEnv(env), n)
	if err != nil {
		t.Fatalf("Overlay: %v", err)
	}
	got := map[string]string{}
	for _, k := range []string{EnvRank, EnvWorldSize, EnvLocalRank, EnvJoin, EnvBindAddr, EnvBindPort, EnvSecret} {
		got[k], _ = l(k)
	}
	return got
}

func TestSlurmPort(t *testing.T) {
	if p := SlurmPort(4242, 1); p != SlurmPortBase+(4242*16+1)%SlurmPortCount {
		t.Fatalf("SlurmPort(4242, 1) = %d", p)
	}
	seen := map[int]bool{}
	for job := uint64(100000); job < 100000+SlurmPortCount/16; job++ {
		for step := uint64(0); step < 16; step++ {
			p := SlurmPort(job, step)
			if p < SlurmPortBase || p >= SlurmPortBase+SlurmPortCount || seen[p] {
				t.Fatalf("SlurmPort(%d, %d) = %d: out of range or reused", job, step, p)
			}
			seen[p] = true
		}
	}
	if p := SlurmPort(4294967294, 4294967294); p < SlurmPortBase || p >= SlurmPortBase+SlurmPortCount {
		t.Fatalf("batch step ids: port %d", p)
	}
}

func TestSlurmMapping(t *testing.T) {
	wantPort := SlurmPort(4242, 1)
	join := "gpu02:" + itoa(wantPort)
	for rank := 0; rank < 4; rank++ {
		env := slurmTask(rank)
		env[EnvSecret] = "00112233445566778899aabbccddeeff"
		node := []string{"10.0.0.2", "10.0.0.3"}[rank/2]
		got := view(t, env, fakeNet{hosts: cluster, local: node})
		bindPort := "0"
		if rank == 0 {
			bindPort = itoa(wantPort)
		}
		want := map[string]string{
			EnvRank: itoa(rank), EnvWorldSize: "4", EnvLocalRank: itoa(rank % 2), EnvJoin: join,
			EnvBindAddr: node, EnvBindPort: bindPort, EnvSecret: "00112233445566778899aabbccddeeff",
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("rank %d: %s = %q, want %q", rank, k, got[k], v)
			}
		}
	}
}

// TestSlurmJobNodelist: without SLURM_STEP_NODELIST the job's first host
// is the rendezvous; VCCL_RDZV_PORT replaces the derived port.
func TestSlurmJobNodelist(t *testing.T) {
	env := slurmTask(1)
	delete(env, "SLURM_STEP_NODELIST")
	env[EnvRdzvPort] = "29555"
	env[EnvSecret] = "abcd"
	got := view(t, env, fakeNet{hosts: cluster, local: "10.0.0.1"})
	if got[EnvJoin] != "gpu01:29555" || got[EnvBindAddr] != "10.0.0.1" || got[EnvBindPort] != "0" {
		t.Errorf("got %v", got)
	}
}

// TestExplicitWins: every VCCL_* variable set explicitly is kept, and a
// malformed scheduler variable that is not needed is not an error.
func TestExplicitWins(t *testing.T) {
	env := slurmTask(2)
	env["SLURM_STEP_NODELIST"] = "gpu[02-" // broken, but not needed
	explicit := map[string]string{
		EnvRank: "5", EnvWorldSize: "8", EnvLocalRank: "1", EnvJoin: "10.9.9.9:1234",
		EnvBindAddr: "10.9.9.8", EnvBindPort: "0", EnvSecret: "beef",
	}
	for k, v := range explicit {
		env[k] = v
	}
	env[EnvSecretFile] = "/nonexistent" // VCCL_SECRET wins: the file is not read
	got := view(t, env, fakeNet{hosts: cluster, local: "10.0.0.3"})
	for k, v := range explicit {
		if got[k] != v {
			t.Errorf("%s = %q, want the explicit %q", k, got[k], v)
		}
	}
	// Only the rank set explicitly: the rest still comes from Slurm.
	env = slurmTask(2)
	env[EnvRank], env[EnvSecret] = "3", "beef"
	got = view(t, env, fakeNet{hosts: cluster, local: "10.0.0.3"})
	if got[EnvRank] != "3" || got[EnvWorldSize] != "4" || got[EnvLocalRank] != "0" || !strings.HasPrefix(got[EnvJoin], "gpu02:") {
		t.Errorf("got %v", got)
	}
}

// TestExplicitJoinRank0: with VCCL_JOIN set, rank 0 binds that address.
func TestExplicitJoinRank0(t *testing.T) {
	env := slurmTask(0)
	env[EnvJoin], env[EnvSecret] = "gpu02:31000", "beef"
	got := view(t, env, fakeNet{hosts: cluster, local: "10.0.0.2"})
	if got[EnvBindAddr] != "10.0.0.2" || got[EnvBindPort] != "31000" || got[EnvJoin] != "gpu02:31000" {
		t.Errorf("got %v", got)
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "job.secret")
	if err := os.WriteFile(f, []byte("  correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := slurmTask(1)
	env[EnvSecretFile] = f
	got := view(t, env, fakeNet{hosts: cluster, local: "10.0.0.2"})
	if want := hex.EncodeToString(DeriveKey([]byte("correct horse battery staple"), "worker")); got[EnvSecret] != want {
		t.Errorf("secret %q, want %q (the launcher's --secret-file derivation)", got[EnvSecret], want)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	for _, path := range []string{short, filepath.Join(dir, "missing"), "/dev/zero"} {
		env[EnvSecretFile] = path
		if _, _, err := Overlay(mapEnv(env), fakeNet{hosts: cluster, local: "10.0.0.2"}); err == nil || !strings.Contains(err.Error(), EnvSecretFile) {
			t.Errorf("%s: error %v, want one naming %s", path, err, EnvSecretFile)
		}
	}
}

func TestNoSecret(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"slurm":      slurmTask(1),
		"kubernetes": {"JOB_COMPLETION_INDEX": "1", EnvWorldSize: "4", EnvK8sService: "vccl", "HOSTNAME": "train-1"},
	} {
		_, _, err := Overlay(mapEnv(env), fakeNet{hosts: map[string]string{"gpu02": "10.0.0.2", "train-1": "10.0.0.2"}, local: "10.0.0.2", hostname: "train-1"})
		if err == nil || !strings.Contains(err.Error(), "no job secret") || !strings.Contains(err.Error(), EnvSecret) {
			t.Errorf("%s: error %v, want 'no job secret' and how to set %s", name, err, EnvSecret)
		}
	}
	// One rank needs none.
	env := slurmTask(0)
	env["SLURM_NTASKS"] = "1"
	if _, _, err := Overlay(mapEnv(env), fakeNet{}); err != nil {
		t.Errorf("one rank: %v", err)
	}
}

func TestSlurmErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		edit   func(map[string]string)
		net    fakeNet
		expect string
	}{
		{"bad nodelist", func(e map[string]string) { e["SLURM_STEP_NODELIST"] = "gpu[03-01]" }, fakeNet{hosts: cluster, local: "10.0.0.2"}, "SLURM_STEP_NODELIST"},
		{"no nodelist", func(e map[string]string) { delete(e, "SLURM_STEP_NODELIST"); delete(e, "SLURM_JOB_NODELIST") }, fakeNet{hosts: cluster, local: "10.0.0.2"}, "VCCL_JOIN"},
		{"bad procid", func(e map[string]string) { e["SLURM_PROCID"] = "x" }, fakeNet{hosts: cluster, local: "10.0.0.2"}, "SLURM_PROCID"},
		{"unresolvable", func(e map[string]string) {}, fakeNet{hosts: map[string]string{}, local: "10.0.0.2"}, `"gpu02"`},
		{"rank 0 elsewhere", func(e map[string]string) {}, fakeNet{hosts: cluster, local: "10.0.0.3"}, "rank 0 cannot bind"},
		{"port taken", func(e map[string]string) {}, fakeNet{hosts: cluster, local: "10.0.0.2", taken: map[int]bool{SlurmPort(4242, 1): true}}, "VCCL_RDZV_PORT"},
		{"bad rdzv port", func(e map[string]string) { e[EnvRdzvPort] = "70000" }, fakeNet{hosts: cluster, local: "10.0.0.2"}, EnvRdzvPort},
	} {
		env := slurmTask(0)
		env[EnvSecret] = "beef"
		c.edit(env)
		_, _, err := Overlay(mapEnv(env), c.net)
		if err == nil || !strings.Contains(err.Error(), c.expect) || !strings.Contains(err.Error(), "Slurm job 4242 step 1") {
			t.Errorf("%s: error %v, want one naming %s and the step", c.name, err, c.expect)
		}
	}
}

// TestNotAStep: a batch script has SLURM_PROCID but no step; nothing is
// filled in and no secret is demanded.
func TestNotAStep(t *testing.T) {
	env := slurmTask(0)
	delete(env, "SLURM_STEP_ID")
	if Detect(mapEnv(env)) != nil || InJob(mapEnv(env)) {
		t.Fatal("a batch script taken for a step")
	}
	l, task, err := Overlay(mapEnv(env), fakeNet{})
	if err != nil || task != nil {
		t.Fatalf("Overlay: %v, %v", task, err)
	}
	if _, ok := l(EnvRank); ok {
		t.Error("VCCL_RANK filled in outside a step")
	}
	if !InJob(mapEnv(slurmTask(0))) || !InJob(mapEnv(map[string]string{EnvRank: "0"})) || InJob(mapEnv(nil)) {
		t.Error("InJob")
	}
}

// TestKubernetesMapping: an Indexed Job's pod, as examples/kubernetes's
// manifest configures it.
func TestKubernetesMapping(t *testing.T) {
	for idx := 0; idx < 3; idx++ {
		host := "train-" + itoa(idx)
		env := map[string]string{
			"JOB_COMPLETION_INDEX": itoa(idx), "HOSTNAME": host, "KUBERNETES_SERVICE_HOST": "10.96.0.1",
			EnvWorldSize: "3", EnvK8sService: "vccl", EnvSecret: "c0ffee",
		}
		podIP := "10.1.0." + itoa(10+idx)
		got := view(t, env, fakeNet{hosts: map[string]string{host: podIP}, hostname: host, local: podIP})
		bindPort := "0"
		if idx == 0 {
			bindPort = "29400"
		}
		want := map[string]string{EnvRank: itoa(idx), EnvWorldSize: "3", EnvLocalRank: "0", EnvJoin: "train-0.vccl:29400",
			EnvBindAddr: podIP, EnvBindPort: bindPort, EnvSecret: "c0ffee"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("index %d: %s = %q, want %q", idx, k, got[k], v)
			}
		}
	}
	// VCCL_K8S_JOB, VCCL_RDZV_PORT and VCCL_BIND_ADDR (status.podIP) set in the manifest.
	env := map[string]string{"JOB_COMPLETION_INDEX": "2", "HOSTNAME": "whatever", EnvK8sJob: "lm", EnvRdzvPort: "30000",
		EnvWorldSize: "4", EnvK8sService: "ring", EnvSecret: "c0ffee", EnvBindAddr: "10.2.3.4"}
	got := view(t, env, fakeNet{})
	if got[EnvJoin] != "lm-0.ring:30000" || got[EnvBindAddr] != "10.2.3.4" || got[EnvRank] != "2" {
		t.Errorf("got %v", got)
	}
	for name, c := range map[string]struct {
		env    map[string]string
		expect string
	}{
		"no world":   {map[string]string{"JOB_COMPLETION_INDEX": "1", "HOSTNAME": "a-1", EnvK8sService: "s", EnvSecret: "ab"}, EnvWorldSize},
		"no service": {map[string]string{"JOB_COMPLETION_INDEX": "1", "HOSTNAME": "a-1", EnvWorldSize: "2", EnvSecret: "ab"}, EnvK8sService},
		"no job":     {map[string]string{"JOB_COMPLETION_INDEX": "1", "HOSTNAME": "pod", EnvWorldSize: "2", EnvK8sService: "s", EnvSecret: "ab"}, EnvK8sJob},
	} {
		_, _, err := Overlay(mapEnv(c.env), fakeNet{hosts: map[string]string{"a-1": "10.0.0.1", "pod": "10.0.0.1"}, hostname: "a-1"})
		if err == nil || !strings.Contains(err.Error(), c.expect) {
			t.Errorf("%s: error %v, want one naming %s", name, err, c.expect)
		}
	}
}
