package main

import (
	"context"
	"io"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vccl/vccl/examples/internal/ranktest"
)

func TestMain(m *testing.M) { ranktest.TestMain(m, main) }

var epochLine = regexp.MustCompile(`(?m)^epoch (\d+) loss (\d+\.\d+) test_acc (\d+\.\d+)% bpv (\d+\.\d+) wire (\S+)MB \(raw (\S+)MB\) time (\d+\.\d)s$`)

func TestSingleRankTrainsAndWritesCSV(t *testing.T) {
	ranktest.SkipInJob(t)
	csvPath := filepath.Join(t.TempDir(), "epochs.csv")
	var out, errb strings.Builder
	err := run(context.Background(), []string{"--codec", "raw", "--epochs", "2", "--max-steps", "60", "--csv", csvPath, "--progress", "auto"}, &out, &errb)
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errb.String())
	}
	m := epochLine.FindAllStringSubmatch(out.String(), -1)
	if len(m) != 2 {
		t.Fatalf("want 2 epoch lines, got:\n%s", out.String())
	}
	acc, _ := strconv.ParseFloat(m[1][3], 64)
	if acc < 80 {
		t.Errorf("after 120 steps test accuracy %.2f%%, want >= 80%%", acc)
	}
	if !strings.Contains(errb.String(), "epoch 2/2 100%") {
		t.Errorf("no finished progress bar for epoch 2 on stderr:\n%s", errb.String())
	}
	recs := ranktest.ReadCSV(t, csvPath)
	if len(recs) != 3 || recs[0][0] != "epoch" || recs[0][2] != "test_acc" || recs[2][0] != "2" {
		t.Fatalf("csv:\n%v", recs)
	}
	if csvAcc, err := strconv.ParseFloat(recs[2][2], 64); err != nil || math.Abs(csvAcc-acc) > 0.006 {
		t.Errorf("csv test_acc %q, printed %.2f", recs[2][2], acc)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--epochs", "0"},
		{"--batch", "0"},
		{"--lr", "-1"},
		{"--momentum", "1"},
		{"--progress", "maybe"},
		{"--codec", "jpeg"},
		{"--data", t.TempDir()},
		{"stray"},
	} {
		err := run(context.Background(), append(args, "--max-steps", "1"), io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func runRanks(t *testing.T, job ranktest.Job) []ranktest.Result {
	t.Helper()
	return ranktest.RunSelf(t, job, 3*time.Minute)
}

// TestRanksTrainInLockstep runs real worker processes on loopback: every
// rank must finish, and rank 0 must report the epoch.
func TestRanksTrainInLockstep(t *testing.T) {
	codecs := []string{"raw", "hevc"}
	if testing.Short() {
		codecs = codecs[:1]
	}
	for _, codec := range codecs {
		t.Run(codec, func(t *testing.T) {
			res := runRanks(t, ranktest.Job{
				NP:   3,
				Args: []string{"--codec", codec, "--epochs", "1", "--max-steps", "12", "--progress", "off"},
				Env:  []string{"VCCL_WARMUP_STEPS=2"},
			})
			ranktest.RequireSuccess(t, res)
			m := epochLine.FindStringSubmatch(res[0].Stdout)
			if m == nil {
				t.Fatalf("rank 0 printed no epoch line:\n%s", res[0].Stdout)
			}
			bpv, _ := strconv.ParseFloat(m[4], 64)
			if codec == "raw" && (bpv < 32 || bpv > 33) {
				t.Errorf("raw: bpv %v, want 32", bpv)
			}
			if codec == "hevc" && !(bpv > 0 && bpv < 32) {
				t.Errorf("hevc: bpv %v, want between 0 and 32", bpv)
			}
			for _, r := range res[1:] {
				if epochLine.MatchString(r.Stdout) {
					t.Errorf("rank %d printed an epoch line too", r.Rank)
				}
			}
		})
	}
}

// TestDriftedReplicasFail gives rank 1 another seed: its parameters differ,
// and the end-of-epoch hash check must stop every rank with an error.
func TestDriftedReplicasFail(t *testing.T) {
	res := runRanks(t, ranktest.Job{
		NP:   2,
		Args: []string{"--codec", "raw", "--epochs", "1", "--max-steps", "3", "--progress", "off"},
		RankArgs: func(r int) []string {
			if r == 1 {
				return []string{"--seed", "99"}
			}
			return nil
		},
	})
	for _, r := range res {
		if r.Err == nil {
			t.Errorf("rank %d exited 0 although the replicas differ", r.Rank)
		}
	}
	if !ranktest.ReportsDrift(res, "epoch 1") {
		t.Errorf("no rank reported the drift naming the other rank:\nrank 0:\n%s\nrank 1:\n%s", res[0].Stderr, res[1].Stderr)
	}
}
