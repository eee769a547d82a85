package main

import (
	"context"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vccl/vccl/examples/internal/gpt"
	"github.com/vccl/vccl/examples/internal/ranktest"
)

func TestMain(m *testing.M) { ranktest.TestMain(m, main) }

var evalLine = regexp.MustCompile(`(?m)^step (\d+)/(\d+) train_loss (\d+\.\d+) val_loss (\d+\.\d+) val_ppl (\d+\.\d+) bpv (\d+\.\d+) wire (\S+)MB \(raw (\S+)MB\) time (\d+\.\d)s$`)

var unigramLine = regexp.MustCompile(`unigram perplexity (\d+\.\d+)`)

// smallCorpus is a small real corpus for the tests: the Go distribution's
// strings package (about 20 files, 200 KB).
func smallCorpus(t *testing.T) string {
	t.Helper()
	src, err := goSrc()
	if err != nil {
		t.Skip(err)
	}
	dir := filepath.Join(src, "strings")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no Go source tree: %v", err)
	}
	return dir
}

// small are the flags of a fast model for the tests.
var small = []string{"--ctx", "16", "--dim", "16", "--heads", "2", "--layers", "1", "--val-every", "5", "--eval-windows", "64"}

func TestSingleRankLearnsAndWritesCSV(t *testing.T) {
	ranktest.SkipInJob(t)
	csvPath := filepath.Join(t.TempDir(), "eval.csv")
	var out, errb strings.Builder
	args := append([]string{"--codec", "raw", "--data", smallCorpus(t), "--steps", "60", "--eval-every", "30",
		"--warmup", "10", "--lr", "0.01", "--csv", csvPath, "--progress", "auto"}, small...)
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errb.String())
	}
	m := evalLine.FindAllStringSubmatch(out.String(), -1)
	if len(m) != 2 || m[1][1] != "60" {
		t.Fatalf("want evaluations at steps 30 and 60, got:\n%s", out.String())
	}
	u := unigramLine.FindStringSubmatch(out.String())
	if u == nil {
		t.Fatalf("no unigram baseline printed:\n%s", out.String())
	}
	unigram, _ := strconv.ParseFloat(u[1], 64)
	ppl, _ := strconv.ParseFloat(m[1][5], 64)
	if !(unigram > 10 && unigram < 100) || !(ppl < unigram) {
		t.Errorf("after 60 steps validation perplexity %v, unigram baseline %v: want below it", ppl, unigram)
	}
	if !strings.Contains(errb.String(), "train 100%") {
		t.Errorf("no finished progress bar on stderr:\n%s", errb.String())
	}
	recs := ranktest.ReadCSV(t, csvPath)
	if len(recs) != 3 || recs[0][3] != "val_ppl" || recs[2][0] != "60" || recs[2][8] != "raw" {
		t.Fatalf("csv:\n%v", recs)
	}
	if v, err := strconv.ParseFloat(recs[2][3], 64); err != nil || math.Abs(v-ppl) > 0.001 {
		t.Errorf("csv val_ppl %q, printed %v", recs[2][3], ppl)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--steps", "0"},
		{"--batch", "0"},
		{"--lr", "-1"},
		{"--min-lr", "2"},
		{"--heads", "3"},
		{"--eval-every", "0"},
		{"--progress", "maybe"},
		{"--codec", "jpeg"},
		{"--raw-tensors", "nosuch"},
		{"--raw-tensors", "[x"},
		{"--data", t.TempDir()},
		{"stray"},
	} {
		full := append([]string{"--data", smallCorpus(t), "--steps", "1"}, args...) // a later --data wins
		if err := run(context.Background(), full, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func runRanks(t *testing.T, job ranktest.Job) []ranktest.Result {
	t.Helper()
	return ranktest.RunSelf(t, job, 3*time.Minute)
}

func readFloats(t *testing.T, path string, n int) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 4*n {
		t.Fatalf("%s: %d bytes, want %d", path, len(b), 4*n)
	}
	f := make([]float32, n)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return f
}

// TestDataParallelStepMatchesSingleProcess runs one step on 2 ranks with the
// raw codec and replays it in this process on the two ranks' batches
// concatenated: the averaged gradient and the parameters after the AdamW
// update must agree within float32 rounding.
func TestDataParallelStepMatchesSingleProcess(t *testing.T) {
	data := smallCorpus(t)
	const batch = 4
	save := filepath.Join(t.TempDir(), "params.bin")
	res := runRanks(t, ranktest.Job{
		NP: 2,
		Args: append([]string{"--codec", "raw", "--data", data, "--steps", "1", "--batch", strconv.Itoa(batch),
			"--warmup", "1", "--lr", "0.003", "--wd", "0.1", "--clip", "1", "--seed", "5", "--save", save, "--progress", "off"}, small...),
	})
	ranktest.RequireSuccess(t, res)

	cfg := gpt.Config{Vocab: 256, Ctx: 16, Dim: 16, Heads: 2, Layers: 1, Hidden: 64}
	m, err := gpt.New(cfg, 5, 2*batch)
	if err != nil {
		t.Fatal(err)
	}
	P := m.NumParams()
	saved := readFloats(t, save, 2*P)
	dpParams, dpGrads := saved[:P], saved[P:]
	tok, tgt := m.Tokens(2 * batch)
	k := batch * cfg.Ctx
	for r := 0; r < 2; r++ {
		c, err := gpt.LoadCorpus(data, r, 2, 5, cfg.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		gpt.FillBatch(tok[r*k:(r+1)*k], tgt[r*k:(r+1)*k], c.Train, batch, cfg.Ctx, 5, r, 1)
	}
	m.Forward(2 * batch)
	if _, err := m.Backward(nil); err != nil {
		t.Fatal(err)
	}
	var gmax float64
	for i, g := range m.Grads {
		a, b := float64(dpGrads[i]), float64(g)
		gmax = max(gmax, math.Abs(b))
		if math.Abs(a-b) > 1e-7+1e-4*math.Abs(b) {
			t.Fatalf("gradient %d: 2 ranks %v, one process %v", i, a, b)
		}
	}
	if gmax < 1e-3 {
		t.Fatalf("largest gradient %v: nothing to compare", gmax)
	}
	scale := 1.0
	if n := gpt.GradNorm(m); n > 1 {
		scale = 1 / n
	}
	opt, err := gpt.NewAdamW(m, adamBeta1, adamBeta2, adamEps, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	opt.Step(gpt.Schedule{Peak: 0.003, MinFrac: 0.1, Warmup: 1, Total: 1}.At(1), scale)
	compared, moved, nonzero := 0, 0, 0
	for i, p := range m.Params {
		g := m.Grads[i]
		if g == 0 { // bytes absent from both batches: no gradient on either side
			if dpGrads[i] != 0 || dpParams[i] != p {
				t.Fatalf("parameter %d without gradient: 2 ranks %v (gradient %v), one process %v", i, dpParams[i], dpGrads[i], p)
			}
			continue
		}
		nonzero++
		// Adam's first step moves each parameter by lr·g/|g|: where |g| is
		// within rounding of zero its sign is not defined by the math.
		if math.Abs(float64(g)) < 1e-6 {
			continue
		}
		compared++
		if math.Abs(float64(dpParams[i]-p)) > 1e-6 {
			t.Fatalf("parameter %d after the step: 2 ranks %v, one process %v", i, dpParams[i], p)
		}
		if dpParams[i] != p {
			moved++
		}
	}
	if compared < nonzero*9/10 || nonzero < P/2 {
		t.Fatalf("compared %d of %d parameters with a gradient (of %d)", compared, nonzero, P)
	}
	t.Logf("%d of %d parameters with a gradient compared (of %d), %d not bit-identical", compared, nonzero, P, moved)
}

// TestDivergedReplicasFail gives rank 1 another learning rate: after the
// first update its parameters differ, and the hash check at the first
// evaluation must stop every rank with an error naming the other rank.
func TestDivergedReplicasFail(t *testing.T) {
	res := runRanks(t, ranktest.Job{
		NP: 2,
		Args: append([]string{"--codec", "raw", "--data", smallCorpus(t), "--steps", "4", "--eval-every", "2",
			"--warmup", "1", "--progress", "off"}, small...),
		RankArgs: func(r int) []string {
			if r == 1 {
				return []string{"--lr", "0.002"}
			}
			return nil
		},
	})
	for _, r := range res {
		if r.Err == nil {
			t.Errorf("rank %d exited 0 although the replicas differ", r.Rank)
		}
	}
	if !ranktest.ReportsDrift(res, "step 2") {
		t.Errorf("no rank reported the divergence at step 2 naming the other rank:\nrank 0:\n%s\nrank 1:\n%s", res[0].Stderr, res[1].Stderr)
	}
}

// TestRanksTrainInLockstep runs 3 real worker processes with a lossy codec:
// every rank finishes with identical parameters (the hash check passes) and
// the gradients went out compressed.
func TestRanksTrainInLockstep(t *testing.T) {
	codec := "int8"
	res := runRanks(t, ranktest.Job{
		NP: 3,
		Args: append([]string{"--codec", codec, "--data", smallCorpus(t), "--steps", "6", "--eval-every", "3",
			"--progress", "off"}, small...),
		Env: []string{"VCCL_WARMUP_STEPS=2", "VCCL_RAW_BELOW=0"},
	})
	ranktest.RequireSuccess(t, res)
	m := evalLine.FindAllStringSubmatch(res[0].Stdout, -1)
	if len(m) != 2 {
		t.Fatalf("rank 0 printed no evaluation lines:\n%s", res[0].Stdout)
	}
	if bpv, _ := strconv.ParseFloat(m[1][6], 64); !(bpv > 4 && bpv < 20) {
		t.Errorf("%s: bpv %v, want between 4 and 20 (int8 after 2 raw warm-up steps)", codec, bpv)
	}
	for _, r := range res[1:] {
		if evalLine.MatchString(r.Stdout) {
			t.Errorf("rank %d printed an evaluation line too", r.Rank)
		}
	}
}

// TestRawTensors sends every tensor but the embeddings raw, then every
// tensor: the achieved rate follows.
func TestRawTensors(t *testing.T) {
	for _, c := range []struct {
		pattern  string
		min, max float64
	}{{"h*,lnf.*", 10, 30}, {"*", 32, 32.1}} {
		res := runRanks(t, ranktest.Job{
			NP: 2,
			Args: append([]string{"--codec", "int8", "--data", smallCorpus(t), "--steps", "2", "--eval-every", "2",
				"--raw-tensors", c.pattern, "--progress", "off"}, small...),
			Env: []string{"VCCL_WARMUP_STEPS=0", "VCCL_RAW_BELOW=0"},
		})
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("%s: rank %d: %v\nstderr:\n%s", c.pattern, r.Rank, r.Err, r.Stderr)
			}
		}
		m := evalLine.FindStringSubmatch(res[0].Stdout)
		if m == nil {
			t.Fatalf("%s: rank 0 printed no evaluation line:\n%s", c.pattern, res[0].Stdout)
		}
		if bpv, _ := strconv.ParseFloat(m[6], 64); bpv < c.min || bpv > c.max {
			t.Errorf("--raw-tensors %s: bpv %v, want %v..%v", c.pattern, bpv, c.min, c.max)
		}
	}
}
