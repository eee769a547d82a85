package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CPU binding of the ranks of one node (--bind).
//
// With --bind cpus (the default) the launcher splits the CPUs it may run on
// (its own affinity mask: the machine, or what Slurm, a cgroup cpuset or
// taskset gave it) into -np contiguous shares in local rank order, and
// starts each rank on its share, as mpirun's --bind-to does. With a
// multiple of the CPUs' number of ranks, consecutive ranks share a CPU:
// ring neighbours exchange every chunk through that CPU's caches. Other
// oversubscribed counts (3 ranks on 2 CPUs) stay unbound. Unbound, the kernel moves ranks
// between CPUs as their sockets wake them, and where it happens to place a
// rank's ring neighbours decides how fast a collective runs: on 2 CPUs, 4
// ranks and a 16 MiB raw allreduce took 25-30 ms bound and 32-52 ms unbound
// from one start to the next (bench/README.md, "CPU binding"). A bound
// rank's Go runtime sizes GOMAXPROCS to its share, and the collective sizes
// its codec threads to it (VCCL_CPUS says it is bound). --bind none leaves
// placement to the kernel.

// Values of --bind.
const (
	bindCPUs = "cpus"
	bindNone = "none"
)

// envCPUs lists the CPUs a bound rank runs on ("0-3", "5"); the launcher
// sets it only when it binds (collective.EnvCPUs).
const envCPUs = "VCCL_CPUS"

// allowedCPUs returns the CPUs this process may run on, in increasing order.
func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("read the launcher's CPU affinity: %w", err)
	}
	var cpus []int
	for c := 0; c < len(set)*64 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// cpuShares splits cpus among n ranks in order: rank i gets the i-th of n
// contiguous, near-equal shares when there are at least n CPUs, and CPU
// cpus[i·len(cpus)/n] when n is a multiple of their number (consecutive
// ranks share one CPU). Otherwise it returns nil: some CPU would carry
// more ranks than another, and the kernel spreads such a job more evenly
// than any binding can.
func cpuShares(cpus []int, n int) [][]int {
	if len(cpus) == 0 || n < 1 || (n > len(cpus) && n%len(cpus) != 0) {
		return nil
	}
	shares := make([][]int, n)
	for i := range n {
		if len(cpus) >= n {
			shares[i] = cpus[i*len(cpus)/n : (i+1)*len(cpus)/n]
		} else {
			shares[i] = cpus[i*len(cpus)/n : i*len(cpus)/n+1]
		}
	}
	return shares
}

// cpuList writes cpus in the kernel's list format ("0-3,6").
func cpuList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

// startBound starts cmd with its CPU affinity set to cpus from its first
// instruction, so that its runtime sizes itself to them. A child inherits
// the affinity of the thread that forks it: this goroutine locks its
// thread, narrows the thread's mask, starts cmd and widens the mask back.
// The thread lives on (a rank's Pdeathsig fires when the thread that
// forked it ends).
func startBound(cmd *exec.Cmd, cpus []int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return fmt.Errorf("read CPU affinity: %w", err)
	}
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("bind to CPUs %s: %w", cpuList(cpus), err)
	}
	err := cmd.Start()
	// Widening a thread's mask back to one it had cannot fail; if it did,
	// the thread would only run the launcher's light work on fewer CPUs.
	_ = unix.SchedSetaffinity(0, &old)
	return err
}
