// Package ranktest runs a command as the ranks of a vccl job on loopback,
// for the examples' tests: it sets every rank's VCCL_* environment the way
// the launcher does (rank, world size, job secret, rank 0's memberlist
// address), starts the processes, and collects each one's output and exit
// status. A test binary usually re-executes itself (see AsMain).
package ranktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vccl/vccl/worker"
)

// EnvMain is set in the environment of processes started by Run; a test
// binary's TestMain checks it with AsMain and runs the command instead of
// the tests.
const EnvMain = "VCCL_RANKTEST_MAIN"

// AsMain reports whether this process was started by Run to act as the
// command rather than as a test binary.
func AsMain() bool { return os.Getenv(EnvMain) == "1" }

// TestMain is the TestMain of a command's test binary: in a process started
// by Run it runs main and exits with status 0 (main exits itself on
// failure); otherwise it runs the tests.
func TestMain(m *testing.M, main func()) {
	if AsMain() {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Result is what one rank did.
type Result struct {
	Rank   int
	Stdout string
	Stderr string
	Err    error // nil when the process exited with status 0
}

// freePort returns a loopback port that is free for both TCP and UDP now
// (memberlist binds both).
func freePort() (int, error) {
	for try := 0; try < 20; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("ranktest: finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("ranktest: no port free for both TCP and UDP")
}

// Job describes the processes Run starts.
type Job struct {
	// NP is the number of ranks.
	NP int
	// Exe is the program, usually os.Args[0] (the test binary itself).
	Exe string
	// Args are every rank's arguments.
	Args []string
	// RankArgs, if not nil, adds arguments for one rank (to make a rank
	// misbehave in a test).
	RankArgs func(rank int) []string
	// Env is added to the current environment.
	Env []string
}

// Run starts the job's processes as ranks 0..NP-1 of one job on 127.0.0.1
// and waits for all of them. When one fails, or ctx ends, the others are
// killed. The results are indexed by rank.
func Run(ctx context.Context, job Job) ([]Result, error) {
	np := job.NP
	if np < 1 {
		return nil, fmt.Errorf("ranktest: np %d, want >= 1", np)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("ranktest: secret: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := make([]Result, np)
	outs := make([][2]bytes.Buffer, np)
	cmds := make([]*exec.Cmd, np)
	for r := 0; r < np; r++ {
		args := append([]string(nil), job.Args...)
		if job.RankArgs != nil {
			args = append(args, job.RankArgs(r)...)
		}
		cmd := exec.CommandContext(ctx, job.Exe, args...)
		bindPort := 0
		if r == 0 {
			bindPort = port
		}
		cmd.Env = append(os.Environ(), job.Env...)
		cmd.Env = append(cmd.Env,
			EnvMain+"=1",
			worker.EnvRank+"="+strconv.Itoa(r),
			worker.EnvLocalRank+"="+strconv.Itoa(r),
			worker.EnvWorldSize+"="+strconv.Itoa(np),
			worker.EnvJoin+"="+net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			worker.EnvSecret+"="+hex.EncodeToString(secret),
			worker.EnvBindAddr+"=127.0.0.1",
			worker.EnvBindPort+"="+strconv.Itoa(bindPort),
		)
		cmd.Stdout, cmd.Stderr = &outs[r][0], &outs[r][1]
		cmd.WaitDelay = 5 * time.Second
		cmds[r] = cmd
	}
	for r, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			cancel()
			for _, c := range cmds[:r] {
				_ = c.Wait()
			}
			return nil, fmt.Errorf("ranktest: starting rank %d: %w", r, err)
		}
	}
	var wg sync.WaitGroup
	for r, cmd := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cmd.Wait()
			if err != nil {
				cancel() // first failure stops the job, as the launcher does
			}
			res[r] = Result{Rank: r, Err: err}
		}()
	}
	wg.Wait()
	for r := range res {
		res[r].Stdout, res[r].Stderr = outs[r][0].String(), outs[r][1].String()
	}
	return res, nil
}
