package hostlist

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var expandCases = []struct {
	expr string
	want []string
}{
	// single hosts
	{"localhost", []string{"localhost"}},
	{"node-7.cluster.example", []string{"node-7.cluster.example"}},
	{"a1,b2", []string{"a1", "b2"}},
	// ranges and lists in one bracket
	{"gpu[01-04,07]", []string{"gpu01", "gpu02", "gpu03", "gpu04", "gpu07"}},
	{"n[1-3]", []string{"n1", "n2", "n3"}},
	{"n[5]", []string{"n5"}},
	{"n[0-0]", []string{"n0"}},
	{"n[1,1]", []string{"n1", "n1"}},
	// padding: the width of the low bound
	{"n[8-11]", []string{"n8", "n9", "n10", "n11"}},
	{"n[098-101]", []string{"n098", "n099", "n100", "n101"}},
	{"n[001-3]", []string{"n001", "n002", "n003"}},
	{"n[1-03]", []string{"n1", "n2", "n3"}},
	{"n[09-10]", []string{"n09", "n10"}},
	// several groups
	{"a1,b[2-3]", []string{"a1", "b2", "b3"}},
	{"n[1-2],m[5],x", []string{"n1", "n2", "m5", "x"}},
	{"gpu[01-02],cpu[10-11,20]", []string{"gpu01", "gpu02", "cpu10", "cpu11", "cpu20"}},
	// several brackets in one host: cartesian product, leftmost slowest
	{"rack[1-2]-n[01-02]", []string{"rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"}},
	{"n[1-2]x[3-4]", []string{"n1x3", "n1x4", "n2x3", "n2x4"}},
	// a bracket alone, separators and spaces
	{"[1-2]", []string{"1", "2"}},
	{"a,b,,c", []string{"a", "b", "c"}},
	{" a , b ", []string{"a", "b"}},
	{"x[1-2]y", []string{"x1y", "x2y"}}, // Slurm refuses a suffix after the last bracket; we expand it
}

func TestExpand(t *testing.T) {
	for _, c := range expandCases {
		got, err := Expand(c.expr)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Expand(%q) = %q, %v; want %q", c.expr, got, err, c.want)
		}
		first, err := First(c.expr)
		if err != nil || first != c.want[0] {
			t.Errorf("First(%q) = %q, %v; want %q", c.expr, first, err, c.want[0])
		}
	}
}

func TestBad(t *testing.T) {
	for _, expr := range []string{
		"", " , ", "n[1-2", "n]1", "n[1-2]]", "n[]", "n[3-1]", "n[a-b]", "n[1-]", "n[-2]",
		"n[1,,2]", "n[[1-2]]", "n[1-2-3]", "n[0-99999999]", "a[1-1024]b[1-1024]c[1-2]",
		"n[1234567890123456789]",
	} {
		if got, err := Expand(expr); !errors.Is(err, ErrSyntax) {
			t.Errorf("Expand(%q) = %q, %v; want an error wrapping ErrSyntax", expr, got, err)
		}
		if got, err := First(expr); expr != "a[1-1024]b[1-1024]c[1-2]" && !errors.Is(err, ErrSyntax) {
			t.Errorf("First(%q) = %q, %v; want an error wrapping ErrSyntax", expr, got, err)
		}
	}
	// The message names the expression and the cause.
	_, err := Expand("gpu[04-01]")
	if err == nil || !strings.Contains(err.Error(), `"gpu[04-01]"`) || !strings.Contains(err.Error(), "goes down") {
		t.Errorf("error %v: want the expression and the cause", err)
	}
}

// TestAgainstScontrol compares Expand with Slurm's own expansion
// (scontrol show hostnames) where Slurm is installed.
func TestAgainstScontrol(t *testing.T) {
	scontrol, err := exec.LookPath("scontrol")
	if err != nil {
		t.Skip("scontrol not installed (Debian package slurm-client)")
	}
	conf := filepath.Join(t.TempDir(), "slurm.conf")
	if err := os.WriteFile(conf, []byte("ClusterName=x\nSlurmctldHost=localhost\nNodeName=localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range expandCases {
		if c.expr == "x[1-2]y" {
			continue
		}
		cmd := exec.Command(scontrol, "show", "hostnames", c.expr)
		cmd.Env = append(os.Environ(), "SLURM_CONF="+conf)
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("scontrol show hostnames %q: %v", c.expr, err)
			continue
		}
		want := strings.Fields(string(out))
		if got, _ := Expand(c.expr); !slices.Equal(got, want) {
			t.Errorf("Expand(%q) = %q; scontrol says %q", c.expr, got, want)
		}
	}
}

func FuzzExpand(f *testing.F) {
	for _, c := range expandCases {
		f.Add(c.expr)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		hosts, err := Expand(expr)
		first, ferr := First(expr)
		// First does not count hosts, so only Expand refuses too many.
		if (err == nil) != (ferr == nil) && (err == nil || !strings.Contains(err.Error(), "more than")) {
			t.Fatalf("Expand error %v, First error %v", err, ferr)
		}
		if err == nil && (len(hosts) == 0 || hosts[0] != first) {
			t.Fatalf("Expand %q, First %q", hosts, first)
		}
	})
}
