package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

var envLine = regexp.MustCompile(`^\[(\d+)\] (VCCL_[A-Z_]+)=(.*)$`)

// parseEnvOutput maps rank -> variable -> value from the helper's env mode.
func parseEnvOutput(t *testing.T, stdout string) map[int]map[string]string {
	t.Helper()
	got := map[int]map[string]string{}
	for _, l := range strings.Split(strings.TrimRight(stdout, "\n"), "\n") {
		m := envLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unexpected output line %q", l)
		}
		r, _ := strconv.Atoi(m[1])
		if got[r] == nil {
			got[r] = map[string]string{}
		}
		got[r][m[2]] = m[3]
	}
	return got
}

func TestEnvironment(t *testing.T) {
	env := []string{"VCCL_BACKEND=software", "VCCL_RANK=99", "VCCL_CODEC=raw"}
	args := append([]string{"-np", "3", "--codec", "hevc", "--bpv", "1.4", "--bucket-bytes", "1048576", "--metrics-port", "19100",
		"--collective-timeout", "5m", "--shm", "1048576"}, helperArgs(t, "env")...)
	res := runLauncher(t, env, args...)
	if res.code != 0 {
		t.Fatalf("exit code %d, want 0; stderr:\n%s", res.code, res.stderr)
	}
	got := parseEnvOutput(t, res.stdout)
	if len(got) != 3 {
		t.Fatalf("output from %d ranks, want 3:\n%s", len(got), res.stdout)
	}
	join := got[0]["VCCL_JOIN"]
	host, port, err := net.SplitHostPort(join)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("VCCL_JOIN = %q, want 127.0.0.1:<port>", join)
	}
	secret := got[0]["VCCL_SECRET"]
	if len(secret) != 64 || strings.Trim(secret, "0123456789abcdef") != "" {
		t.Fatalf("VCCL_SECRET = %q, want 64 hex digits", secret)
	}
	for r := 0; r < 3; r++ {
		wantPort := "0"
		if r == 0 {
			wantPort = port
		}
		want := map[string]string{
			"VCCL_RANK": strconv.Itoa(r), "VCCL_LOCAL_RANK": strconv.Itoa(r), "VCCL_WORLD_SIZE": "3",
			"VCCL_JOIN": join, "VCCL_SECRET": secret, "VCCL_BIND_ADDR": "127.0.0.1", "VCCL_BIND_PORT": wantPort,
			"VCCL_CODEC": "hevc", "VCCL_BPV": "1.4", "VCCL_BUCKET_BYTES": "1048576", "VCCL_TIMEOUT": "5m", "VCCL_SHM": "1048576",
			"VCCL_BACKEND":      "software", // inherited: no --backend flag
			"VCCL_METRICS_ADDR": "127.0.0.1:" + strconv.Itoa(19100+r),
			"VCCL_NODE_RANK":    "0", "VCCL_NNODES": "1", "VCCL_LOCAL_WORLD_SIZE": "3",
		}
		for k, v := range want {
			if got[r][k] != v {
				t.Errorf("rank %d: %s = %q, want %q", r, k, got[r][k], v)
			}
		}
	}
	// Every job gets a fresh secret.
	res2 := runLauncher(t, nil, append([]string{"-np", "1"}, helperArgs(t, "env")...)...)
	if s2 := parseEnvOutput(t, res2.stdout)[0]["VCCL_SECRET"]; s2 == secret || len(s2) != 64 {
		t.Errorf("second job's secret %q: want a fresh 64-digit one", s2)
	}
}

func TestExitCodePropagated(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rank     int
		code     int
		wantCode int
		wantMsg  string
	}{
		{"all succeed", 1, 0, 0, ""},
		{"rank 1 exits 7", 1, 7, 7, "rank 1 (pid "},
		{"rank 0 exits 3", 0, 3, 3, "rank 0 (pid "},
		{"rank 2 exits 255", 2, 255, 255, "exited with code 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runLauncher(t, nil, append([]string{"-np", "3"}, helperArgs(t, "exit-if-rank", strconv.Itoa(tc.rank), strconv.Itoa(tc.code))...)...)
			if res.code != tc.wantCode {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", res.code, tc.wantCode, res.stderr)
			}
			if tc.wantMsg != "" && !strings.Contains(res.stderr, tc.wantMsg) {
				t.Errorf("stderr %q does not mention %q", res.stderr, tc.wantMsg)
			}
			if tc.wantCode == 0 && res.stderr != "" {
				t.Errorf("successful job printed to stderr: %q", res.stderr)
			}
		})
	}
}

// TestCrashStopsRest: a rank killed by a signal stops the others, which
// ignore SIGTERM and so get SIGKILL after --grace; no rank and no child of
// a rank survives the launcher.
func TestCrashStopsRest(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pids")
	// Ranks 0 and 2 each write their pid and their child's pid: 4 lines.
	res := runLauncher(t, nil, append([]string{"-np", "3", "--grace", "300ms"}, helperArgs(t, "crash-test", pidfile, "1", "4")...)...)
	if res.code != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", res.code, 128+int(syscall.SIGKILL), res.stderr)
	}
	for _, want := range []string{"rank 1 (pid ", "killed by signal 9", "stopping the job", "sending SIGKILL"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, res.stderr)
		}
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p)
	}
	if len(pids) != 4 {
		t.Fatalf("pidfile has %d pids, want 4", len(pids))
	}
	if alive := waitGone(pids); len(alive) > 0 {
		for _, p := range alive {
			syscall.Kill(p, syscall.SIGKILL)
		}
		t.Fatalf("processes %v outlived the launcher", alive)
	}
}

func TestSignalForwarding(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			sl := startLauncher(t, append([]string{"-np", "3"}, helperArgs(t, "wait-signal")...)...)
			sl.waitOutput(t, 3, func(l string) bool { return strings.Contains(l, "] ready") })
			if err := sl.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			code, rest := sl.wait(t)
			if code != 128+int(sig) {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, 128+int(sig), sl.stderr.String())
			}
			got := map[string]bool{}
			for _, l := range rest {
				got[l] = true
			}
			for r := 0; r < 3; r++ {
				if want := fmt.Sprintf("[%d] got %v", r, sig); !got[want] {
					t.Errorf("missing %q in %q", want, rest)
				}
			}
			if !strings.Contains(sl.stderr.String(), "forwarding it to every rank") {
				t.Errorf("stderr: %q", sl.stderr.String())
			}
		})
	}
}

var spamLine = regexp.MustCompile(`^\[(\d+)\] rank=(\d+) seq=(\d+) len=(\d+) ([a-z]*)$`)
var spamErrLine = regexp.MustCompile(`^\[(\d+)\] err rank=(\d+) seq=(\d+)$`)

func TestOutputPrefixedNotInterleaved(t *testing.T) {
	const np, n = 4, 2000
	res := runLauncher(t, nil, append([]string{"-np", strconv.Itoa(np)}, helperArgs(t, "spam", strconv.Itoa(n))...)...)
	if res.code != 0 {
		t.Fatalf("exit code %d; stderr:\n%.2000s", res.code, res.stderr)
	}
	next := make([]int, np)
	for i, l := range strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n") {
		m := spamLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("stdout line %d is not one whole prefixed line: %.200q", i, l)
		}
		r, _ := strconv.Atoi(m[1])
		seq, _ := strconv.Atoi(m[3])
		ln, _ := strconv.Atoi(m[4])
		if m[1] != m[2] || r >= np {
			t.Fatalf("line %d: prefix [%s] on rank %s's line", i, m[1], m[2])
		}
		if seq != next[r] {
			t.Fatalf("rank %d: line seq %d, want %d", r, seq, next[r])
		}
		next[r]++
		if len(m[5]) != ln {
			t.Fatalf("rank %d seq %d: payload %d bytes, want %d", r, seq, len(m[5]), ln)
		}
	}
	for r := range next {
		if next[r] != n+1 { // n lines and the unterminated last one
			t.Errorf("rank %d: %d stdout lines, want %d", r, next[r], n+1)
		}
	}
	nextErr := make([]int, np)
	for i, l := range strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n") {
		m := spamErrLine.FindStringSubmatch(l)
		if m == nil || m[1] != m[2] {
			t.Fatalf("stderr line %d is not a whole prefixed line of the rank: %.200q", i, l)
		}
		r, _ := strconv.Atoi(m[1])
		seq, _ := strconv.Atoi(m[3])
		if seq != nextErr[r] {
			t.Fatalf("rank %d: stderr seq %d, want %d", r, seq, nextErr[r])
		}
		nextErr[r] += 7
	}
	for r := range nextErr {
		if want := (n + 6) / 7 * 7; nextErr[r] != want {
			t.Errorf("rank %d: stderr lines up to seq %d, want %d", r, nextErr[r]-7, want-7)
		}
	}
}

func TestTimeout(t *testing.T) {
	res := runLauncher(t, nil, append([]string{"-np", "2", "--timeout", "300ms"}, helperArgs(t, "block")...)...)
	if res.code != exitTimeout {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", res.code, exitTimeout, res.stderr)
	}
	if !strings.Contains(res.stderr, "timed out after 300ms") {
		t.Errorf("stderr: %q", res.stderr)
	}
}

// busyPort holds a TCP port on 127.0.0.1 for the test's lifetime.
func busyPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// closedPort returns a port on 127.0.0.1 that nothing listens on (now).
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

func TestBadInput(t *testing.T) {
	secret := "0123456789abcdef0123"
	busy := strconv.Itoa(busyPort(t))
	closed := strconv.Itoa(closedPort(t))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no program", []string{"-np", "2"}, "no program given"},
		{"np zero", []string{"-np", "0", "--", "true"}, "-np must be at least 1, got 0"},
		{"np negative", []string{"-np", "-3", "--", "true"}, "-np must be at least 1"},
		{"missing program", []string{"-np", "2", "--", "/nonexistent/prog"}, `program "/nonexistent/prog" not found`},
		{"unknown flag", []string{"--no-such-flag", "--", "true"}, "flag provided but not defined"},
		{"port in use", []string{"--port", busy, "--", "true"}, "is in use"},
		{"bad codec", []string{"--codec", "mpeg2", "--", "true"}, `--codec "mpeg2"`},
		{"bad bpv", []string{"--bpv", "-1", "--", "true"}, `--bpv "-1"`},
		{"bad shm", []string{"--shm", "16M", "--", "true"}, `--shm "16M"`},
		{"bad collective timeout", []string{"--collective-timeout", "soon", "--", "true"}, `--collective-timeout "soon"`},
		{"nnodes without rdzv", []string{"--nnodes", "2", "--secret", secret, "--", "true"}, "needs --rdzv"},
		{"nnodes without secret", []string{"--nnodes", "2", "--rdzv", "127.0.0.1:" + closed, "--", "true"}, "needs a job secret"},
		{"short secret", []string{"--nnodes", "2", "--rdzv", "127.0.0.1:" + closed, "--secret", "short", "--", "true"}, "need at least 16"},
		{"node rank out of range", []string{"--nnodes", "2", "--node-rank", "2", "--rdzv", "127.0.0.1:" + closed, "--secret", secret, "--", "true"}, "--node-rank must be in 0..1"},
		{"rdzv port in use", []string{"--nnodes", "2", "--node-rank", "0", "--rdzv", "127.0.0.1:" + busy, "--secret", secret, "--", "true"}, "cannot bind the rendezvous address"},
		{"rdzv host not local", []string{"--nnodes", "2", "--node-rank", "0", "--rdzv", "192.0.2.1:29400", "--secret", secret, "--", "true"}, "192.0.2.1 is not an address of this node"},
		{"rdzv unreachable", []string{"--nnodes", "2", "--node-rank", "1", "--rdzv", "127.0.0.1:" + closed, "--rdzv-timeout", "700ms", "--secret", secret, "--", "true"}, "unreachable for 700ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// In process: bad input ends before any rank starts.
			var so, se bytes.Buffer
			res := result{code: run(tc.args, &so, &se), stdout: so.String(), stderr: se.String()}
			if res.code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", res.code, exitUsage, res.stderr)
			}
			if !strings.Contains(res.stderr, tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, res.stderr)
			}
			if strings.Contains(res.stderr, secret) {
				t.Errorf("stderr shows the secret:\n%s", res.stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	res := runLauncher(t, nil, "-h")
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("exit code %d, stderr %q", res.code, res.stderr)
	}
	if n := strings.Count(res.stdout, "usage: launcher"); n != 1 {
		t.Errorf("usage printed %d times", n)
	}
	for _, want := range []string{"usage: launcher", "VCCL_CODEC", "-np", "--rdzv", "Examples:", "--node-rank 1"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("-h output lacks %q", want)
		}
	}
}
