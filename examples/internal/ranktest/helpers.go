package ranktest

import (
	"context"
	"encoding/csv"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vccl/vccl/worker"
)

// SkipInJob skips a test that runs the command in this process as a single
// rank, where the test binary itself runs inside a vccl job (the command
// would join that job).
func SkipInJob(t testing.TB) {
	t.Helper()
	if _, ok := os.LookupEnv(worker.EnvRank); ok {
		t.Skip("running inside a vccl job")
	}
}

// RunSelf runs the test binary itself (whose TestMain is this package's
// TestMain) as the job's ranks, stopping them after timeout. It fails the
// test where the processes cannot be started; a rank's own failure is in
// its Result.
func RunSelf(t testing.TB, job Job, timeout time.Duration) []Result {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	job.Exe = exe
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := Run(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// RequireSuccess stops the test at the first rank that exited with an
// error, showing its stdout and stderr.
func RequireSuccess(t testing.TB, res []Result) {
	t.Helper()
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("rank %d: %v\nstdout:\n%s\nstderr:\n%s", r.Rank, r.Err, r.Stdout, r.Stderr)
		}
	}
}

// ReportsDrift reports whether a rank of a 2-rank job stopped with the
// hash check's error at what ("step 2", "epoch 1"), naming the other rank.
// Both ranks see the mismatch; whichever exits first gets the other killed
// (as the launcher does), so the report may be on either.
func ReportsDrift(res []Result, what string) bool {
	for _, r := range res {
		other := 1 - r.Rank
		want := "rank " + strconv.Itoa(r.Rank) + ": " + what + ": parameters differ"
		if strings.Contains(r.Stderr, want) && strings.Contains(r.Stderr, "on rank(s) "+strconv.Itoa(other)) {
			return true
		}
	}
	return false
}

// ReadCSV returns every record of the CSV file at path, header included.
func ReadCSV(t testing.TB, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}
