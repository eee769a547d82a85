package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
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

// allowedCPUs returns the CPUs this process may run on, in topology order
// (see topoOrder).
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
	topoOrder(cpus, readTopology)
	return cpus, nil
}

// cpuPlace is where a logical CPU sits: its package (socket) and its
// physical core within it.
type cpuPlace struct{ pkg, core int }

// readTopology reads a CPU's place from sysfs; ok is false where it cannot.
func readTopology(cpu int) (cpuPlace, bool) {
	read := func(name string) (int, bool) {
		b, err := os.ReadFile(fmt.Sprintf("/sys/devices/system/cpu/cpu%d/topology/%s", cpu, name))
		if err != nil {
			return 0, false
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		return v, err == nil
	}
	pkg, ok1 := read("physical_package_id")
	core, ok2 := read("core_id")
	return cpuPlace{pkg, core}, ok1 && ok2
}

// topoOrder sorts cpus by package, then physical core, then number, so
// that contiguous shares keep a rank on whole cores of one socket: Linux
// numbers a core's hyperthreads far apart (CPU 0's sibling is often CPU
// N/2), and a split in numeric order would give two ranks halves of the
// same cores. Where place cannot tell, numeric order stays.
func topoOrder(cpus []int, place func(int) (cpuPlace, bool)) {
	at := make(map[int]cpuPlace, len(cpus))
	for _, c := range cpus {
		p, ok := place(c)
		if !ok {
			return
		}
		at[c] = p
	}
	slices.SortStableFunc(cpus, func(a, b int) int {
		pa, pb := at[a], at[b]
		if pa.pkg != pb.pkg {
			return pa.pkg - pb.pkg
		}
		if pa.core != pb.core {
			return pa.core - pb.core
		}
		return a - b
	})
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

// cpuList writes cpus in the kernel's list format ("0-3,6"), in numeric
// order.
func cpuList(cpus []int) string {
	cpus = slices.Sorted(slices.Values(cpus))
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
		return &bindError{fmt.Errorf("read CPU affinity: %w", err)}
	}
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return &bindError{fmt.Errorf("bind to CPUs %s: %w", cpuList(cpus), err)}
	}
	err := cmd.Start()
	// Widening a thread's mask back to one it had cannot fail; if it did,
	// the thread would only run the launcher's light work on fewer CPUs.
	_ = unix.SchedSetaffinity(0, &old)
	return err
}

// bindError is a startBound failure before anything was started: the
// rank can still be started unbound.
type bindError struct{ err error }

func (e *bindError) Error() string { return e.err.Error() }
func (e *bindError) Unwrap() error { return e.err }
