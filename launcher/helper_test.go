package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vccl/vccl/internal/testenv"
)

// The test binary plays three parts: the tests, the launcher (when
// envAsLauncher is set) and the rank program (argv[1] == helperArg).
const (
	envAsLauncher = "VCCL_LAUNCHER_TEST_AS_LAUNCHER"
	helperArg     = "__launcher_test_helper"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(helper(os.Args[2:]))
	}
	if os.Getenv(envAsLauncher) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(runTests(m))
}

// runSelects reports whether the -run flag selects the top-level test name.
func runSelects(name string) bool {
	f := flag.Lookup("test.run")
	if f == nil || f.Value.String() == "" {
		return true
	}
	top, _, _ := strings.Cut(f.Value.String(), "/")
	ok, err := regexp.MatchString(top, name)
	return err != nil || ok
}

func runTests(m *testing.M) int {
	flag.Parse()
	if netnsTestWanted() && !testing.Short() && runSelects("TestMultiNodeNetns") {
		dir, err := os.MkdirTemp("", "launcher-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		startPerfBuild(dir)
		defer func() {
			if perfBuild.done != nil {
				<-perfBuild.done
			}
		}()
	}
	return m.Run()
}

func myRank() int {
	r, err := strconv.Atoi(os.Getenv("VCCL_RANK"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: bad VCCL_RANK:", err)
		os.Exit(99)
	}
	return r
}

// waitLines polls path until it has n lines (bounded: 20 s).
func waitLines(path string, n int) bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if bytes.Count(b, []byte("\n")) >= n {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(98)
	}
	// One write: O_APPEND keeps concurrent lines whole.
	f.WriteString(line + "\n")
	f.Close()
}

// helper is the rank program of the tests.
func helper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no mode")
		return 97
	}
	switch args[0] {
	case "env": // print the launcher-set environment
		var kv []string
		for _, e := range os.Environ() {
			if strings.HasPrefix(e, "VCCL_") && !strings.HasPrefix(e, envAsLauncher) {
				kv = append(kv, e)
			}
		}
		sort.Strings(kv)
		fmt.Println(strings.Join(kv, "\n"))
		return 0
	case "affinity": // print this process's CPU affinity (as VCCL_AFFINITY=LIST) and the environment
		cpus, err := allowedCPUs()
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 95
		}
		fmt.Printf("VCCL_AFFINITY=%s\n", cpuList(cpus))
		return helper([]string{"env"})
	case "env-barrier": // env-barrier PATH N: as env, then wait until N ranks have printed (so that no node leaves the rendezvous before all met)
		code := helper([]string{"env"})
		appendLine(args[1], strconv.Itoa(myRank()))
		n, _ := strconv.Atoi(args[2])
		if !waitLines(args[1], n) {
			fmt.Fprintln(os.Stderr, "helper: not all ranks arrived")
			return 96
		}
		return code
	case "exit-if-rank": // exit-if-rank R CODE: rank R exits CODE, the others 0
		r, _ := strconv.Atoi(args[1])
		code, _ := strconv.Atoi(args[2])
		if myRank() == r {
			return code
		}
		return 0
	case "wait-signal": // print ready, then report the first SIGINT/SIGTERM and exit 0
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
		fmt.Println("ready pid", os.Getpid())
		s := <-c
		fmt.Println("got", s)
		return 0
	case "block": // print ready and block; default signal handling
		fmt.Println("ready")
		blockForever()
	case "crash-test": // crash-test PIDFILE CRASHRANK N: CRASHRANK dies by SIGKILL once N lines are in PIDFILE; the others start a grandchild, ignore SIGTERM and block
		pidfile := args[1]
		crash, _ := strconv.Atoi(args[2])
		n, _ := strconv.Atoi(args[3])
		if myRank() == crash {
			if !waitLines(pidfile, n) {
				fmt.Fprintln(os.Stderr, "helper: pidfile never filled")
				return 96
			}
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			blockForever()
		}
		signal.Ignore(syscall.SIGTERM)
		gc := exec.Command("sleep", "300")
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 95
		}
		appendLine(pidfile, strconv.Itoa(os.Getpid()))
		appendLine(pidfile, strconv.Itoa(gc.Process.Pid))
		blockForever()
	case "fail-after-ready": // fail-after-ready READYFILE N RANK CODE: RANK exits CODE once N lines are in READYFILE; the others report ready and wait for a signal
		readyfile := args[1]
		n, _ := strconv.Atoi(args[2])
		r, _ := strconv.Atoi(args[3])
		code, _ := strconv.Atoi(args[4])
		if myRank() == r {
			if !waitLines(readyfile, n) {
				return 96
			}
			fmt.Fprintln(os.Stderr, "failing on purpose")
			return code
		}
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		appendLine(readyfile, strconv.Itoa(os.Getpid()))
		<-c
		fmt.Println("stopped by SIGTERM")
		return 143
	case "spam": // spam N: N stdout lines of varying length written in pieces, every 7th also to stderr; a long line; an unterminated last line
		n, _ := strconv.Atoi(args[1])
		r := myRank()
		for i := 0; i < n; i++ {
			l := (i*7919 + r*104729) % 3000
			if i == n/2 {
				l = 300 << 10
			}
			line := fmt.Sprintf("rank=%d seq=%d len=%d %s\n", r, i, l, strings.Repeat(string(rune('a'+(i+r)%26)), l))
			// Three writes per line: a launcher that forwarded reads
			// as they come would interleave.
			a, b := len(line)/3, 2*len(line)/3
			os.Stdout.WriteString(line[:a])
			os.Stdout.WriteString(line[a:b])
			os.Stdout.WriteString(line[b:])
			if i%7 == 0 {
				e := fmt.Sprintf("err rank=%d seq=%d\n", r, i)
				os.Stderr.WriteString(e[:5])
				os.Stderr.WriteString(e[5:])
			}
		}
		os.Stdout.WriteString(fmt.Sprintf("rank=%d seq=%d len=0 ", r, n))
		return 0
	}
	fmt.Fprintln(os.Stderr, "helper: unknown mode", args[0])
	return 97
}

// result is one finished launcher run.
type result struct {
	code           int
	stdout, stderr string
}

func testBinary(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		panic(err) // cannot happen on Linux
	}
	return exe
}

// launcherCmd returns the command that runs the launcher with args.
func launcherCmd(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, testBinary(t), args...)
	cmd.Env = append(os.Environ(), envAsLauncher+"=1")
	return cmd
}

// helperArgs are the launcher arguments that run the helper in mode.
func helperArgs(t *testing.T, mode ...string) []string {
	return append([]string{"--", testBinary(t), helperArg}, mode...)
}

// runLauncher runs the launcher to completion (bounded: 60 s).
func runLauncher(t *testing.T, env []string, args ...string) result {
	t.Helper()
	res, err := tryLauncher(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tryLauncher is runLauncher for any goroutine: it returns its failure.
func tryLauncher(t *testing.T, env []string, args ...string) (result, error) {
	return tryLauncherIn(t, "", env, args...)
}

// tryLauncherIn runs the launcher in network namespace netns ("": this one).
func tryLauncherIn(t *testing.T, netns string, env []string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := launcherCmd(ctx, t, args...)
	if netns != "" {
		cmd.Args = append([]string{"ip", "netns", "exec", netns}, cmd.Args...)
		cmd.Path = ipPath
	}
	cmd.Env = append(cmd.Env, env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		return result{}, fmt.Errorf("launcher %v did not finish within 60s\nstdout:\n%s\nstderr:\n%s", args, so.String(), se.String())
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			return result{}, fmt.Errorf("launcher %v: %w", args, err)
		}
		code = ee.ExitCode()
	}
	return result{code: code, stdout: so.String(), stderr: se.String()}, nil
}

// startedLauncher is a launcher running in the background.
type startedLauncher struct {
	cmd    *exec.Cmd
	lines  chan string // stdout lines
	stderr *testenv.SyncBuffer
	done   chan struct{}
	code   int
}

func startLauncher(t *testing.T, args ...string) *startedLauncher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := launcherCmd(ctx, t, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sl := &startedLauncher{cmd: cmd, lines: make(chan string, 1024), stderr: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = sl.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			sl.lines <- sc.Text()
		}
		close(sl.lines)
		err := cmd.Wait()
		sl.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			sl.code = ee.ExitCode()
		}
		close(sl.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-sl.done
	})
	return sl
}

// waitLinesOut reads stdout lines until pred has held for n lines.
func (sl *startedLauncher) waitOutput(t *testing.T, n int, pred func(string) bool) []string {
	t.Helper()
	var got []string
	timeout := time.After(30 * time.Second)
	for matched := 0; matched < n; {
		select {
		case l, ok := <-sl.lines:
			if !ok {
				t.Fatalf("launcher output ended after %q; stderr:\n%s", got, sl.stderr.String())
			}
			got = append(got, l)
			if pred(l) {
				matched++
			}
		case <-timeout:
			t.Fatalf("waited 30s for output; got %q; stderr:\n%s", got, sl.stderr.String())
		}
	}
	return got
}

// waitStderr polls the launcher's stderr until it contains s (bounded: 30 s).
func (sl *startedLauncher) waitStderr(s string) bool {
	return until(30*time.Second, func() bool { return strings.Contains(sl.stderr.String(), s) })
}

// until polls cond every 10 ms until it holds (true) or d has passed (false).
func until(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// wait waits for the launcher to exit and returns the rest of stdout.
func (sl *startedLauncher) wait(t *testing.T) (int, []string) {
	t.Helper()
	var rest []string
	for l := range sl.lines {
		rest = append(rest, l)
	}
	select {
	case <-sl.done:
	case <-time.After(60 * time.Second):
		t.Fatal("launcher did not exit")
	}
	return sl.code, rest
}

// processGone reports whether pid has exited (gone, or a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) STATE ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// waitGone polls until every pid has exited (bounded: 5 s) and returns the
// ones still alive.
func waitGone(pids []int) []int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var alive []int
		for _, p := range pids {
			if !processGone(p) {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// blockForever sleeps until the process is killed. A select{} would do in a
// cgo build, but a pure-Go binary (CGO_ENABLED=0) whose goroutines are all
// blocked is a fatal deadlock to the runtime.
func blockForever() {
	for {
		time.Sleep(time.Hour)
	}
}
