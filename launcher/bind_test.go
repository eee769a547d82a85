package main

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestCPUShares(t *testing.T) {
	for _, tc := range []struct {
		cpus []int
		n    int
		want [][]int
	}{
		{[]int{0, 1}, 4, [][]int{{0}, {0}, {1}, {1}}},
		{[]int{0, 1}, 3, nil}, // uneven: left to the kernel
		{[]int{0, 1, 2}, 6, [][]int{{0}, {0}, {1}, {1}, {2}, {2}}},
		{[]int{0, 1, 2, 3}, 2, [][]int{{0, 1}, {2, 3}}},
		{[]int{0, 1, 2, 3, 4, 5, 6}, 3, [][]int{{0, 1}, {2, 3}, {4, 5, 6}}},
		{[]int{2, 5, 7}, 3, [][]int{{2}, {5}, {7}}},
		{[]int{3}, 2, [][]int{{3}, {3}}},
		{nil, 2, nil},
	} {
		if got := cpuShares(tc.cpus, tc.n); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("cpuShares(%v, %d) = %v, want %v", tc.cpus, tc.n, got, tc.want)
		}
	}
	for cpus, want := range map[string]string{"": "", "0": "0", "0 1 2 3": "0-3", "0 2 3 4 7": "0,2-4,7", "1 3": "1,3"} {
		var list []int
		for _, f := range strings.Fields(cpus) {
			c, _ := strconv.Atoi(f)
			list = append(list, c)
		}
		if got := cpuList(list); got != want {
			t.Errorf("cpuList(%v) = %q, want %q", list, got, want)
		}
	}
}

// TestBindCPUs runs ranks that print their own affinity: with the default
// --bind cpus each runs on its share of the launcher's CPUs and VCCL_CPUS
// names it; with --bind none each may run on all of them, and a VCCL_CPUS
// inherited from the launcher's environment does not reach them.
func TestBindCPUs(t *testing.T) {
	all, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	const n = 2
	shares := cpuShares(all, n)
	res := runLauncher(t, nil, append([]string{"-np", strconv.Itoa(n)}, helperArgs(t, "affinity")...)...)
	if res.code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", res.code, res.stderr)
	}
	got := parseEnvOutput(t, res.stdout)
	for r := range n {
		want := cpuList(shares[r])
		if got[r]["VCCL_AFFINITY"] != want || got[r]["VCCL_CPUS"] != want {
			t.Errorf("rank %d: affinity %q, VCCL_CPUS %q; want both %q (launcher's CPUs %s)", r, got[r]["VCCL_AFFINITY"], got[r]["VCCL_CPUS"], want, cpuList(all))
		}
	}
	res = runLauncher(t, []string{"VCCL_CPUS=7"}, append([]string{"-np", "2", "--bind", "none"}, helperArgs(t, "affinity")...)...)
	if res.code != 0 {
		t.Fatalf("--bind none: exit code %d; stderr:\n%s", res.code, res.stderr)
	}
	got = parseEnvOutput(t, res.stdout)
	for r := range 2 {
		if got[r]["VCCL_AFFINITY"] != cpuList(all) || got[r]["VCCL_CPUS"] != "" {
			t.Errorf("--bind none: rank %d: affinity %q, VCCL_CPUS %q; want %q and unset", r, got[r]["VCCL_AFFINITY"], got[r]["VCCL_CPUS"], cpuList(all))
		}
	}
	if res := runLauncher(t, nil, append([]string{"-np", "2", "--bind", "core"}, helperArgs(t, "affinity")...)...); res.code != exitUsage {
		t.Errorf("--bind core: exit code %d, want %d", res.code, exitUsage)
	}
}

// TestTopoOrder: CPUs are ordered by package and physical core, so that a
// contiguous share holds whole cores (hyperthread siblings are numbered
// far apart); without topology the numeric order stays.
func TestTopoOrder(t *testing.T) {
	// 2 packages × 2 cores × 2 threads, siblings numbered 4 apart.
	place := func(c int) (cpuPlace, bool) { return cpuPlace{pkg: (c % 4) / 2, core: c % 2}, true }
	cpus := []int{0, 1, 2, 3, 4, 5, 6, 7}
	topoOrder(cpus, place)
	if want := []int{0, 4, 1, 5, 2, 6, 3, 7}; !reflect.DeepEqual(cpus, want) {
		t.Errorf("topology order %v, want %v", cpus, want)
	}
	if got := cpuShares(cpus, 2); !reflect.DeepEqual(got, [][]int{{0, 4, 1, 5}, {2, 6, 3, 7}}) || cpuList(got[0]) != "0-1,4-5" {
		t.Errorf("shares %v (first %q): want one package each", got, cpuList(got[0]))
	}
	cpus = []int{3, 1, 2}
	topoOrder(cpus, func(c int) (cpuPlace, bool) { return cpuPlace{}, c != 2 })
	if !reflect.DeepEqual(cpus, []int{3, 1, 2}) {
		t.Errorf("unknown topology reordered the CPUs: %v", cpus)
	}
}
