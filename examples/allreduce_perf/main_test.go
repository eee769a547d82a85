package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vccl/vccl/examples/internal/ranktest"
)

func TestMain(m *testing.M) { ranktest.TestMain(m, main) }

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1024": 1024, "1K": 1 << 10, "1k": 1 << 10, "64M": 64 << 20, "1G": 1 << 30, "8KB": 8 << 10, "2MiB": 2 << 20, "0": 0,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "K", "1T", "-1K", "1.5M", "x"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): no error", in)
		}
	}
}

func TestSizes(t *testing.T) {
	if got := sizes(1<<10, 64<<20, 2); len(got) != 17 || got[0] != 1024 || got[16] != 64<<20 {
		t.Errorf("1K..64M ×2: %v", got)
	}
	if got := sizes(8, 100, 4); !slices.Equal(got, []int64{8, 32}) {
		t.Errorf("8..100 ×4: %v", got)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-b", "2"}, {"-b", "1M", "-e", "1K"}, {"-f", "1"}, {"-n", "0"}, {"-w", "-1"},
		{"-c", "2"}, {"-o", "max"}, {"-d", "half"}, {"-b", "1Q"}, {"-codec", "jpeg", "-b", "1K", "-e", "1K"}, {"stray"},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestSingleRankJSON(t *testing.T) {
	ranktest.SkipInJob(t)
	var out strings.Builder
	if err := run(context.Background(), []string{"-b", "1K", "-e", "8K", "-n", "2", "-w", "1", "-json", "-codec", "raw"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	rs := decodeJSON(t, out.String())
	if len(rs) != 4 {
		t.Fatalf("%d objects for 1K..8K, want 4:\n%s", len(rs), out.String())
	}
	for i, r := range rs {
		if r.Size != 1024<<i || int64(r.Count) != r.Size/4 || r.Wrong != 0 || r.NMSE != 0 || r.Ranks != 1 || r.Root != -1 {
			t.Errorf("object %d: %+v", i, r)
		}
		checkTimes(t, r)
		// One rank: its mean lies between its fastest and slowest iteration.
		if r.TimeUs < r.TimeP10Us || r.TimeUs > r.TimeMaxUs {
			t.Errorf("object %d: mean %v µs outside the iterations' %v..%v µs", i, r.TimeUs, r.TimeP10Us, r.TimeMaxUs)
		}
	}
}

// checkTimes checks that a result's time percentiles are positive and in
// order, and that its mean is not above its maximum.
func checkTimes(t *testing.T, r result) {
	t.Helper()
	q := []float64{r.TimeP10Us, r.TimeP50Us, r.TimeP90Us, r.TimeMaxUs}
	if !(q[0] > 0) || !slices.IsSorted(q) || r.TimeUs > r.TimeMaxUs {
		t.Errorf("size %d: time %v µs, p10/p50/p90/max %v", r.Size, r.TimeUs, q)
	}
}

func TestTimeQuantiles(t *testing.T) {
	for _, c := range []struct {
		in   []int64
		want [4]int64
	}{
		{nil, [4]int64{}},
		{[]int64{7}, [4]int64{7, 7, 7, 7}},
		{[]int64{5, 1}, [4]int64{1, 1, 5, 5}},
		{[]int64{4, 10, 1, 7, 3, 9, 2, 8, 6, 5}, [4]int64{1, 5, 9, 10}},
		{[]int64{3, 3, 1, 2, 100}, [4]int64{1, 3, 100, 100}},
	} {
		in := slices.Clone(c.in)
		if got := timeQuantiles(in); got != c.want {
			t.Errorf("timeQuantiles(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func decodeJSON(t *testing.T, s string) []result {
	t.Helper()
	var rs []result
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var r result
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		rs = append(rs, r)
	}
	return rs
}

// TestRanksAgree runs real worker processes on loopback and checks the
// table's promises: every rank's result equal to rank 0's, NMSE near zero
// for raw, compression for a video codec.
func TestRanksAgree(t *testing.T) {
	codecs := []string{"raw", "h264"}
	if testing.Short() {
		codecs = codecs[:1]
	}
	for _, codec := range codecs {
		t.Run(codec, func(t *testing.T) {
			res := ranktest.RunSelf(t, ranktest.Job{
				NP:   3,
				Args: []string{"-b", "4K", "-e", "64K", "-f", "4", "-n", "2", "-w", "1", "-c", "1", "-json", "-codec", codec},
			}, 2*time.Minute)
			for _, r := range res {
				if r.Err != nil {
					t.Fatalf("rank %d: %v\nstderr:\n%s", r.Rank, r.Err, r.Stderr)
				}
				if r.Rank > 0 && r.Stdout != "" {
					t.Errorf("rank %d printed %q", r.Rank, r.Stdout)
				}
			}
			rs := decodeJSON(t, res[0].Stdout)
			if len(rs) != 3 {
				t.Fatalf("%d objects for 4K..64K ×4, want 3", len(rs))
			}
			for _, r := range rs {
				if r.Wrong != 0 || r.Ranks != 3 || !(r.TimeUs > 0) || r.WireBytes <= 0 {
					t.Errorf("%+v", r)
				}
				checkTimes(t, r)
				if want := r.AlgBW * 4 / 3; r.BusBW < want*0.999 || r.BusBW > want*1.001 {
					t.Errorf("busbw %v, want algbw·2(n−1)/n = %v", r.BusBW, want)
				}
				switch {
				case codec == "raw" && (r.NMSE > 1e-12 || r.BPV < 32 || r.BPV > 33): // headers cost a little
					t.Errorf("raw: %+v", r)
				case codec == "h264" && r.Count >= 16384 && (r.Codec != "h264" || !(r.BPV < 16) || !(r.NMSE > 0 && r.NMSE < 2)):
					t.Errorf("h264: %+v", r)
				}
			}
		})
	}
}
