//go:build amd64 && !purego

package kern

import (
	"os"
	"strings"
	"testing"
)

// TestHasF16CMatchesCPUInfo checks the CPUID probe against what Linux
// reports for the first CPU.
func TestHasF16CMatchesCPUInfo(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip("no /proc/cpuinfo")
	}
	first, _, _ := strings.Cut(string(b), "\n\n")
	want := false
	for _, line := range strings.Split(first, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			want = strings.Contains(" "+v+" ", " f16c ")
		}
	}
	if got := hasF16C(); got != want {
		t.Errorf("hasF16C() = %v, /proc/cpuinfo says %v", got, want)
	}
}
