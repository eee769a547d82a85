package schedenv

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestKubernetesManifest reads examples/kubernetes/vccl-job.yaml and runs
// the mapping over the environment it gives each pod: the example and the
// code must agree (no cluster exists here to run the manifest itself).
func TestKubernetesManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "kubernetes", "vccl-job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	y := string(b)
	field := func(re string) string {
		m := regexp.MustCompile(`(?m)` + re).FindStringSubmatch(y)
		if m == nil {
			t.Fatalf("manifest: no match for %s", re)
		}
		return m[1]
	}
	service := field(`^kind: Service\nmetadata:\n  name: (\S+)`)
	job := field(`^kind: Job\nmetadata:\n  name: (\S+)`)
	completions, _ := strconv.Atoi(field(`^  completions: (\d+)`))
	if p := field(`^  parallelism: (\d+)`); p != strconv.Itoa(completions) {
		t.Errorf("parallelism %s, completions %d: the ranks must run at once", p, completions)
	}
	if sd := field(`^      subdomain: (\S+)`); sd != service {
		t.Errorf("subdomain %q, Service %q", sd, service)
	}
	if sel := field(`batch.kubernetes.io/job-name: (\S+)`); sel != job {
		t.Errorf("Service selects job %q, the Job is %q", sel, job)
	}
	field(`^  completionMode: (Indexed)`)

	// The container's env: plain values, and valueFrom (status.podIP).
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^ +- name: (VCCL_\w+)(?: .*)?\n +(value: "?([^"\n]*)"?|valueFrom:)`).FindAllStringSubmatch(y, -1) {
		if strings.HasPrefix(m[2], "valueFrom") {
			env[m[1]] = "<podIP>"
		} else {
			env[m[1]] = strings.TrimSpace(m[3])
		}
	}
	if env[EnvWorldSize] != strconv.Itoa(completions) || env[EnvK8sService] != service || env[EnvBindAddr] != "<podIP>" || env[EnvSecretFile] == "" {
		t.Fatalf("manifest env %v: want VCCL_WORLD_SIZE = completions, VCCL_K8S_SERVICE = the Service, VCCL_BIND_ADDR from the pod IP, VCCL_SECRET_FILE", env)
	}
	if !strings.Contains(y, "mountPath: "+filepath.Dir(env[EnvSecretFile])) {
		t.Errorf("VCCL_SECRET_FILE %s is not in the mounted Secret", env[EnvSecretFile])
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("from a kubernetes secret\n"), 0o400)
	port := strconv.Itoa(DefaultK8sPort)
	if !strings.Contains(y, "containerPort: "+port) || !strings.Contains(y, "port: "+port) {
		t.Errorf("the manifest does not expose the rendezvous port %s", port)
	}

	for idx := 0; idx < completions; idx++ {
		pod := map[string]string{"JOB_COMPLETION_INDEX": strconv.Itoa(idx), "HOSTNAME": job + "-" + strconv.Itoa(idx),
			"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
		for k, v := range env {
			pod[k] = v
		}
		ip := "10.4.0." + strconv.Itoa(20+idx)
		pod[EnvBindAddr], pod[EnvSecretFile] = ip, secret
		got := view(t, pod, fakeNet{})
		bindPort := "0"
		if idx == 0 {
			bindPort = port
		}
		want := map[string]string{EnvRank: strconv.Itoa(idx), EnvWorldSize: strconv.Itoa(completions), EnvLocalRank: "0",
			EnvJoin: job + "-0." + service + ":" + port, EnvBindAddr: ip, EnvBindPort: bindPort}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("index %d: %s = %q, want %q", idx, k, got[k], v)
			}
		}
		if len(got[EnvSecret]) != 64 {
			t.Errorf("index %d: secret %q", idx, got[EnvSecret])
		}
	}
}
