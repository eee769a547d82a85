package worker

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vccl/vccl/internal/schedenv"
	"github.com/vccl/vccl/internal/testenv"
)

// TestEnvNamesMatchSchedenv keeps the scheduler mapping's copies of the
// variable names equal to the worker's.
func TestEnvNamesMatchSchedenv(t *testing.T) {
	for _, p := range [][2]string{
		{EnvRank, schedenv.EnvRank}, {EnvLocalRank, schedenv.EnvLocalRank}, {EnvWorldSize, schedenv.EnvWorldSize},
		{EnvJoin, schedenv.EnvJoin}, {EnvSecret, schedenv.EnvSecret}, {EnvBindAddr, schedenv.EnvBindAddr},
		{EnvBindPort, schedenv.EnvBindPort}, {EnvSecretFile, schedenv.EnvSecretFile}, {EnvRdzvPort, schedenv.EnvRdzvPort},
		{EnvK8sService, schedenv.EnvK8sService}, {EnvK8sJob, schedenv.EnvK8sJob},
	} {
		if p[0] != p[1] {
			t.Errorf("worker has %q, schedenv %q", p[0], p[1])
		}
	}
}

// clearJobEnv unsets every variable of a job for the test.
func clearJobEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VCCL_") || strings.HasPrefix(k, "SLURM_") || k == "JOB_COMPLETION_INDEX" {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// TestConfigFromSlurmEnv: ConfigFromEnv in the tasks of a 3-task srun step
// on the node "localhost", with the secret in VCCL_SECRET_FILE.
func TestConfigFromSlurmEnv(t *testing.T) {
	clearJobEnv(t)
	port := testenv.FreePort(t, "127.0.0.1")
	f := filepath.Join(t.TempDir(), "job.secret")
	if err := os.WriteFile(f, []byte("a secret shared by the whole job\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantSecret := hex.EncodeToString(schedenv.DeriveKey([]byte("a secret shared by the whole job"), "worker"))
	for rank := 0; rank < 3; rank++ {
		for k, v := range map[string]string{
			"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": strconv.Itoa(rank), "SLURM_NTASKS": "3",
			"SLURM_LOCALID": strconv.Itoa(rank), "SLURM_JOB_NODELIST": "localhost", EnvRdzvPort: strconv.Itoa(port),
			EnvSecretFile: f,
		} {
			t.Setenv(k, v)
		}
		c, err := ConfigFromEnv()
		if err != nil {
			t.Fatalf("rank %d: %v", rank, err)
		}
		wantPort := 0
		if rank == 0 {
			wantPort = port
		}
		join := "localhost:" + strconv.Itoa(port)
		if c.Rank != rank || c.WorldSize != 3 || c.LocalRank != rank || len(c.Join) != 1 || c.Join[0] != join ||
			c.BindAddr != "127.0.0.1" || c.BindPort != wantPort || hex.EncodeToString(c.Secret) != wantSecret {
			t.Errorf("rank %d: %+v", rank, c)
		}
	}
	// No secret: refused, saying how to set one.
	t.Setenv(EnvSecretFile, "")
	_, err := ConfigFromEnv()
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "Slurm job 77 step 0") || !strings.Contains(err.Error(), EnvSecretFile) {
		t.Errorf("no secret: %v", err)
	}
}
